/* SPDX-License-Identifier: MIT */
/* keywrap.h alone, as strict C11: it leans on nothing included before it. */
#include <kvpool/keywrap.h>
#include <string.h>

_Static_assert(__STDC_VERSION__ == 201112L, "compiled as C11");

int main(void)
{
	struct kv_wrapped_key w;
	memset(&w, 0, sizeof w);
	w.alg = KV_CRYPTO_AES_256_GCM;
	return (sizeof w == KV_WRAPPED_KEY_SIZE_V1 && sizeof w.key_id == KV_KEY_ID_BYTES && w.alg == 1) ? 0 : 1;
}
