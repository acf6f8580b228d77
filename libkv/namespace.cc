// SPDX-License-Identifier: MIT
//
// Namespaces: a table of identity manifests. A manifest lives in the slot
// its chain seed hashes to, or the next ones (linear probing), so every
// process registering the same manifest walks the same slots and meets the
// same one: no two ids for one manifest. A slot being written (WRITING) is
// waited on while its writer lives and taken over when it is dead; this is
// registration, not the data path, and lasts as long as copying 160 bytes.
#include "detail.h"

#include <sched.h>
#include <xxhash.h>

namespace kv::detail {

namespace {

int manifest_check(const kv_manifest &m) {
    if (m.model_name[0] == 0) return -EINVAL;
    if (m.block_tokens == 0) return -EINVAL;
    if (m.tp_world == 0 || m.tp_rank >= m.tp_world) return -EINVAL;
    if (m.hash_scheme < KV_HASH_XXH3_128_CHAINED || m.hash_scheme > KV_HASH_MAX) return -EINVAL;
    for (uint64_t r : m.reserved)
        if (r) return -EINVAL;
    return 0;
}

} // namespace

bool ns_valid(const kv_pool *p, uint32_t ns) {
    return ns < p->hdr->max_namespaces && NsCtl::state(load(p->ns[ns].ctl, std::memory_order_acquire)) == KV_NS_ACTIVE;
}

} // namespace kv::detail

using namespace kv::detail;

extern "C" {

void kv_manifest_init(kv_manifest *m, const char *model, uint32_t block_tokens) noexcept {
    if (!m) return;
    *m = kv_manifest{};
    if (model) strncpy(reinterpret_cast<char *>(m->model_name), model, sizeof m->model_name - 1);
    m->dtype = KV_DTYPE_BF16;
    m->block_tokens = block_tokens;
    m->tp_rank = 0;
    m->tp_world = 1;
    m->hash_scheme = KV_HASH_XXH3_128_CHAINED;
}

uint64_t kv_manifest_seed(const kv_manifest *m) noexcept {
    return m ? XXH3_64bits(m, sizeof *m) : 0;
}

int kv_ns_register(kv_pool *p, const kv_manifest *m, uint32_t *ns_out, uint64_t *seed_out) noexcept {
    if (!p || !m || !ns_out) return -EINVAL;
    if (int rc = manifest_check(*m)) return rc;
    const uint64_t seed = kv_manifest_seed(m);
    const uint32_t n = p->hdr->max_namespaces;
    for (uint32_t k = 0; k < n;) {
        uint32_t i = uint32_t((seed + k) % n);
        kv_namespace &ns = p->ns[i];
        uint64_t c = load(ns.ctl, std::memory_order_acquire); // pairs with the ACTIVE release below
        switch (NsCtl::state(c)) {
        case KV_NS_ACTIVE:
            if (memcmp(&ns.manifest, m, sizeof *m) == 0) {
                *ns_out = i;
                if (seed_out) *seed_out = seed;
                return 0;
            }
            k++;
            continue;
        case KV_NS_WRITING: {
            uint32_t owner = NsCtl::client1(c) - 1;
            uint64_t oc = owner < p->hdr->max_clients ? load(p->clients[owner].ctl, std::memory_order_acquire) : 0;
            if (ClientCtl::state(oc) != KV_CLIENT_LIVE ||
                client_is_dead(ClientCtl::pid(oc), load(p->clients[owner].start_time, std::memory_order_relaxed)))
                cas(ns.ctl, c, NsCtl::make(KV_NS_FREE, 0, uint32_t(c >> 32) + 1), std::memory_order_acq_rel);
            else
                sched_yield();
            continue; // look at the same slot again
        }
        default: {
            uint64_t w = NsCtl::make(KV_NS_WRITING, p->client + 1, uint32_t(c >> 32) + 1);
            if (!cas(ns.ctl, c, w, std::memory_order_acq_rel)) continue;
            memcpy(&ns.manifest, m, sizeof *m);
            store(ns.chain_seed, seed, std::memory_order_relaxed);
            store(ns.id, i, std::memory_order_relaxed);
            store(ns.ctl, NsCtl::make(KV_NS_ACTIVE, 0, uint32_t(w >> 32) + 1), std::memory_order_release);
            *ns_out = i;
            if (seed_out) *seed_out = seed;
            return 0;
        }
        }
    }
    return -ENOSPC;
}

int kv_ns_get(kv_pool *p, uint32_t ns, kv_manifest *out, uint64_t *seed_out) noexcept {
    if (!p || !out) return -EINVAL;
    if (!ns_valid(p, ns)) return -ENOENT;
    memcpy(out, &p->ns[ns].manifest, sizeof *out);
    if (seed_out) *seed_out = load(p->ns[ns].chain_seed, std::memory_order_relaxed);
    return 0;
}

} // extern "C"
