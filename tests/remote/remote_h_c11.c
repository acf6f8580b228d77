/* SPDX-License-Identifier: MIT */
/* remote.h alone, as strict C11: it leans on nothing included before it. */
#include <kvpool/remote.h>

_Static_assert(__STDC_VERSION__ == 201112L, "compiled as C11");

int main(void) {
    struct kv_remote_header h = {0};
    struct kv_remote_crypto c = {0};
    h.magic = KV_REMOTE_MAGIC;
    h.flags = KV_REMOTE_F_ENCRYPTED;
    c.wrapped.alg = KV_CRYPTO_AES_256_GCM;
    return (sizeof h == KV_REMOTE_HEADER_SIZE_V1 && sizeof c == KV_REMOTE_CRYPTO_SIZE_V1 &&
            h.magic == 0x45544f4d4552564bULL && c.wrapped.alg == 1)
               ? 0
               : 1;
}
