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

// NS-A1: an ACTIVE namespace's manifest and seed; pairs with NS-R1.
bool ns_valid(const kv_pool *p, uint32_t ns) {
    return ns < p->hdr->max_namespaces &&
           NsCtl::state(load(p->ns[ns].ctl, std::memory_order_acquire)) == KV_NS_ACTIVE;
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

int kv_ns_register(kv_pool *p, const kv_manifest *m, uint32_t *ns_out,
                   uint64_t *seed_out) noexcept {
    if (!p || !m || !ns_out) return -EINVAL;
    if (int rc = manifest_check(*m)) return rc;
    const uint64_t seed = kv_manifest_seed(m);
    const uint32_t n = p->hdr->max_namespaces;
    for (uint32_t k = 0; k < n;) {
        uint32_t i = uint32_t((seed + k) % n);
        kv_namespace &ns = p->ns[i];
        // NS-A2: pairs with NS-R1 (the manifest of an ACTIVE slot is
        // complete), NS-X2 (a slot being written) and NS-X1, REAP-X1 (a
        // WRITING slot reset to FREE).
        uint64_t c = load(ns.ctl, std::memory_order_acquire);
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
            // NS-A3: the writer's client slot; pairs with CLI-X1, CLI-X3 (its
            // claim) and CLI-R3, REAP-R1 (its slot freed).
            uint64_t oc = owner < p->hdr->max_clients
                              ? load(p->clients[owner].ctl, std::memory_order_acquire)
                              : 0;
            // start_time relaxed: one not yet seen reads 0, and the writer is
            // then judged by its pid alone (PROTOCOL.md section 1).
            if (ClientCtl::state(oc) != KV_CLIENT_LIVE ||
                client_is_dead(ClientCtl::pid(oc),
                               load(p->clients[owner].start_time, std::memory_order_relaxed)))
                // NS-X1: WRITING(dead) -> FREE; acquire pairs with NS-X2,
                // release publishes the FREE slot to NS-A2 and NS-X2.
                cas(ns.ctl, c, NsCtl::make(KV_NS_FREE, 0, uint32_t(c >> 32) + 1),
                    std::memory_order_acq_rel);
            else
                sched_yield();
            continue; // look at the same slot again
        }
        default: {
            uint64_t w = NsCtl::make(KV_NS_WRITING, p->client + 1, uint32_t(c >> 32) + 1);
            // NS-X2: FREE -> WRITING(me); acquire pairs with NS-X1 and
            // REAP-X1, release publishes the writer to NS-A2 and REAP-A6.
            if (!cas(ns.ctl, c, w, std::memory_order_acq_rel)) continue;
            // Relaxed (and plain memcpy): published by NS-R1.
            memcpy(&ns.manifest, m, sizeof *m);
            store(ns.chain_seed, seed, std::memory_order_relaxed);
            store(ns.id, i, std::memory_order_relaxed);
            // NS-R1: publishes the manifest, seed and id; pairs with NS-A1
            // (ns_valid) and NS-A2.
            store(ns.ctl, NsCtl::make(KV_NS_ACTIVE, 0, uint32_t(w >> 32) + 1),
                  std::memory_order_release);
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
    // Relaxed: ordered after the manifest's publication by NS-A1.
    if (seed_out) *seed_out = load(p->ns[ns].chain_seed, std::memory_order_relaxed);
    return 0;
}

} // extern "C"
