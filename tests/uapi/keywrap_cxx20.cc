// SPDX-License-Identifier: MIT
// keywrap.h alone, as C++20: it leans on nothing included before it.
#include <kvpool/keywrap.h>

static_assert(__cplusplus == 202002L, "compiled as C++20");
static_assert(sizeof(kv_wrapped_key::wrapped) == KV_CRYPTO_KEY_BYTES);
static_assert(sizeof(kv_wrapped_key::tag) == KV_CRYPTO_TAG_BYTES);
static_assert(sizeof(kv_wrapped_key::iv) == KV_CRYPTO_IV_BYTES);

int main()
{
	kv_wrapped_key w{};
	w.alg = KV_CRYPTO_AES_256_GCM;
	return sizeof w == KV_WRAPPED_KEY_SIZE_V1 && w.alg == 1 ? 0 : 1;
}
