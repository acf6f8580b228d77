// SPDX-License-Identifier: MIT
// remote.h alone, as strict C++20: it leans on nothing included before it.
#include <kvpool/remote.h>

static_assert(__cplusplus == 202002L, "compiled as C++20");
static_assert(sizeof(kv_remote_header) == KV_REMOTE_HEADER_SIZE_V1);
static_assert(sizeof(kv_remote_crypto) == KV_REMOTE_CRYPTO_SIZE_V1);
static_assert(KV_REMOTE_AAD_SIZE == 240);

int main() {
    kv_remote_header h{};
    h.magic = KV_REMOTE_MAGIC;
    return h.magic == 0x45544f4d4552564bULL ? 0 : 1;
}
