// SPDX-License-Identifier: MIT
#include "remote_io.h"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <detail.h> // PinA (a view's entry and generation), copy_hash

namespace kv::daemon {

namespace {

// One AES context per thread (crypto.h): the tier's workers and tests call
// from several threads.
crypto::Aead &thread_aead() {
    static thread_local crypto::Aead aead;
    return aead;
}

} // namespace

const char *upload_status_name(UploadStatus s) {
    switch (s) {
    case UploadStatus::Uploaded:
        return "uploaded";
    case UploadStatus::Gone:
        return "gone";
    case UploadStatus::Changed:
        return "changed";
    case UploadStatus::Corrupt:
        return "corrupt";
    case UploadStatus::Error:
        return "error";
    }
    return "unknown";
}

FetchResult fetch_into_pool(ClusterClient &cluster, kv_pool *pool, uint32_t ns,
                            const NsDigest &digest, std::span<const kv_key> keys, size_t first,
                            const FetchOptions &opts) {
    FetchResult res;
    try {
        kv_manifest m{};
        if (int rc = kv_ns_get(pool, ns, &m, nullptr); rc != 0) {
            res.errors = 1;
            res.error = strf("namespace %u: kv_ns_get: %s", ns, std::strerror(-rc));
            return res;
        }
        // A digest that is not this namespace's would commit blocks of
        // another model under ns: refuse the whole request.
        if (ns_digest(m) != digest) {
            res.errors = 1;
            res.error = strf("namespace %u: digest mismatch with its manifest", ns);
            return res;
        }
        // The cluster client stops at the deadline too; put it back after.
        cluster.set_deadline(opts.deadline);
        struct Undo {
            ClusterClient &c;
            ~Undo() { c.set_deadline(std::chrono::steady_clock::time_point::max()); }
        } undo{cluster};
        // Read at most one byte more than the largest value the pool can
        // take (with a crypto block, the larger head): a longer one is
        // refused without being read whole.
        kv_stats st{};
        if (int rc = kv_pool_stats(pool, &st); rc != 0) {
            res.errors = 1;
            res.error = strf("kv_pool_stats: %s", std::strerror(-rc));
            return res;
        }
        const uint64_t max_value = kSealedHeadBytes + st.slab_size;
        const uint32_t batch = std::max<uint32_t>(1, opts.batch);
        std::vector<std::string> names;
        for (size_t i = first; i < keys.size();) {
            const size_t n = std::min<size_t>(batch, keys.size() - i);
            names.clear();
            for (size_t k = 0; k < n; k++)
                names.push_back(remote_key(opts.key_prefix, digest, keys[i + k]));
            if (std::chrono::steady_clock::now() >= opts.deadline) {
                res.errors = 1;
                res.error = strf("%s: the fetch's deadline passed", names[0].c_str());
                return res;
            }
            std::vector<GetResult> got = cluster.get_many(names, max_value + 1);
            for (size_t k = 0; k < n; k++, i++) {
                GetResult &g = got[k];
                if (g.status == KeyStatus::Missing) {
                    res.missing = 1;
                    return res;
                }
                if (g.status == KeyStatus::Error) {
                    res.errors = 1;
                    res.error = g.error;
                    return res;
                }
                if (g.value().size() > max_value) {
                    res.rejected = 1;
                    res.rejected_by[size_t(Reject::Oversize)]++;
                    res.error = strf("%s: more than %" PRIu64 " bytes, the pool's largest block",
                                     names[k].c_str(), st.slab_size);
                    return res;
                }
                CheckedValue v = check_header(g.value(), digest, keys[i], opts.keyring);
                if (v.reject != Reject::None) {
                    res.rejected = 1;
                    res.rejected_by[size_t(v.reject)]++;
                    res.error = strf("%s: %s", names[k].c_str(), v.detail.c_str());
                    return res;
                }
                kv_put_opts po{};
                po.struct_size = sizeof po;
                po.meta.tokens = m.block_tokens;
                po.meta.priority = opts.priority;
                po.ttl_ms = opts.ttl_ms;
                if (i > 0) {
                    po.flags |= KV_PUT_F_PARENT;
                    po.parent = keys[i - 1];
                }
                kv_reservation r{};
                int rc = kv_reserve_ex(pool, ns, &keys[i], v.data.size(), &po, &r);
                if (rc == KV_DEDUP) {
                    res.present++;
                    res.committed++;
                    continue;
                }
                if (rc == -EMSGSIZE) {
                    res.rejected = 1;
                    res.rejected_by[size_t(Reject::Oversize)]++;
                    res.error = strf("%s: %zu bytes, more than the pool's largest block",
                                     names[k].c_str(), v.data.size());
                    return res;
                }
                if (rc != 0) {
                    res.errors = 1;
                    res.error = strf("%s: kv_reserve_ex: %s", names[k].c_str(), std::strerror(-rc));
                    return res;
                }
                if (v.encrypted) {
                    // Decrypted straight into the reservation; on a bad tag
                    // open_value zeroes it before it is given back. The
                    // pool's checksum is of what is now in the reservation.
                    if (open_value(thread_aead(), v, static_cast<uint8_t *>(r.data)) !=
                        Reject::None) {
                        kv_abort(pool, &r);
                        res.rejected = 1;
                        res.rejected_by[size_t(v.reject)]++;
                        res.error = strf("%s: %s", names[k].c_str(), v.detail.c_str());
                        return res;
                    }
                }
                // The bytes come from this process's private reply buffer, so
                // what is hashed here is what is committed.
                uint64_t h = v.encrypted
                                 ? kv::detail::copy_hash(nullptr, r.data, v.data.size())
                                 : kv::detail::copy_hash(r.data, v.data.data(), v.data.size());
                if (!v.encrypted && h != v.checksum) {
                    kv_abort(pool, &r);
                    res.rejected = 1;
                    res.rejected_by[size_t(Reject::Checksum)]++;
                    res.error = strf("%s: bytes hash to %#018" PRIx64 ", header says %#018" PRIx64,
                                     names[k].c_str(), h, v.checksum);
                    return res;
                }
                rc = kv_commit(pool, &r, KV_COMMIT_F_CHECKSUM, h);
                if (rc != 0) {
                    kv_abort(pool, &r);
                    res.errors = 1;
                    res.error = strf("%s: kv_commit: %s", names[k].c_str(), std::strerror(-rc));
                    return res;
                }
                res.fetched++;
                res.committed++;
                res.bytes += v.data.size();
            }
        }
    } catch (const std::exception &e) {
        res.errors = 1;
        res.error = e.what();
    }
    return res;
}

namespace {

struct Pinned {
    kv_view view{};
    kv_remote_header header{};
    SealedHead sealed{}; // encrypted: header and crypto block
    size_t offset = 0;   // encrypted: where its ciphertext is in the sealing buffer
    bool pinned = true;  // view still held (an encrypted block is released once sealed)
    std::string name;
    size_t item = 0;
};

// The calling thread's sealing buffer, kept between calls (a batch's
// ciphertext; it grows to the largest batch the thread sealed).
std::vector<uint8_t> &thread_sealed() {
    static thread_local std::vector<uint8_t> buf;
    return buf;
}

} // namespace

void release_upload_buffer() {
    std::vector<uint8_t>().swap(thread_sealed());
}

UploadResult upload_blocks(ClusterClient &cluster, kv_pool *pool, std::span<const UploadItem> items,
                           const UploadOptions &opts) {
    UploadResult res;
    res.status.assign(items.size(), UploadStatus::Error);
    std::vector<Pinned> pinned;
    std::vector<std::pair<uint32_t, NsDigest>> digests; // checked namespaces
    auto note = [&](size_t i, UploadStatus s, std::string why) {
        res.status[i] = s;
        switch (s) {
        case UploadStatus::Uploaded:
            res.uploaded++;
            break;
        case UploadStatus::Gone:
            res.gone++;
            break;
        case UploadStatus::Changed:
            res.changed++;
            break;
        case UploadStatus::Corrupt:
            res.corrupt++;
            break;
        case UploadStatus::Error:
            res.errors++;
            break;
        }
        if (!why.empty() && res.error.empty()) res.error = std::move(why);
    };
    auto release_all = [&] {
        for (auto &p : pinned)
            if (p.pinned) kv_release(pool, &p.view);
        pinned.clear();
    };
    try {
        size_t i = 0;
        while (i < items.size()) {
            // Pin up to batch_bytes worth of blocks, and at most
            // batch_blocks of them (pins are a per-client budget), at
            // least one.
            uint64_t bytes = 0;
            const size_t max_blocks = std::max<uint32_t>(1, opts.batch_blocks);
            for (; i < items.size() &&
                   (pinned.empty() || (bytes < opts.batch_bytes && pinned.size() < max_blocks));
                 i++) {
                const UploadItem &it = items[i];
                // A digest that is not the namespace's would publish the
                // block as another model's, to every host.
                const NsDigest *nd = nullptr;
                for (auto &[n, d] : digests)
                    if (n == it.ns) nd = &d;
                if (!nd) {
                    kv_manifest m{};
                    int rc = kv_ns_get(pool, it.ns, &m, nullptr);
                    if (rc != 0) {
                        note(i, UploadStatus::Error,
                             strf("namespace %u: kv_ns_get: %s", it.ns, std::strerror(-rc)));
                        continue;
                    }
                    digests.emplace_back(it.ns, ns_digest(m));
                    nd = &digests.back().second;
                }
                if (*nd != it.digest) {
                    note(i, UploadStatus::Error,
                         strf("namespace %u: the item's digest is not its manifest's", it.ns));
                    continue;
                }
                Pinned p;
                int rc = kv_get(pool, it.ns, &it.key, &p.view);
                if (rc == -ENOENT) {
                    note(i, UploadStatus::Gone, "");
                    continue;
                }
                if (rc != 0) {
                    note(i, UploadStatus::Error, strf("kv_get: %s", std::strerror(-rc)));
                    continue;
                }
                const uint64_t w = p.view.handle[1];
                const bool other_life =
                    it.entry != KV_NIL32 &&
                    (kv::detail::PinA::entry(w) != it.entry || kv::detail::PinA::gen(w) != it.gen);
                if (other_life || (it.length && p.view.length != it.length)) {
                    kv_release(pool, &p.view);
                    note(i, UploadStatus::Changed, "");
                    continue;
                }
                // The pool's checksum was computed by whoever committed the
                // block (or supplied by it): a block whose bytes disagree
                // must not spread to other hosts.
                uint64_t h = kv::detail::copy_hash(nullptr, p.view.data, p.view.length);
                if (h != p.view.checksum) {
                    kv_release(pool, &p.view);
                    note(i, UploadStatus::Corrupt,
                         strf("block hashes to %#018" PRIx64 ", pool says %#018" PRIx64, h,
                              p.view.checksum));
                    continue;
                }
                p.header = make_header(it.digest, it.key, p.view.length, h);
                p.name = remote_key(opts.key_prefix, it.digest, it.key);
                p.item = i;
                bytes += p.view.length;
                pinned.push_back(std::move(p));
            }
            if (pinned.empty()) continue;
            if (opts.keyring) {
                // Seal the whole batch first: the buffer must not move once
                // the SETs point into it.
                std::vector<uint8_t> &buf = thread_sealed();
                if (buf.size() < bytes) buf.resize(bytes);
                size_t off = 0;
                for (size_t k = 0; k < pinned.size();) {
                    Pinned &p = pinned[k];
                    const std::string err = seal_value(
                        thread_aead(), *opts.keyring, items[p.item].digest, items[p.item].key,
                        {static_cast<const uint8_t *>(p.view.data), p.view.length}, p.sealed,
                        buf.data() + off);
                    if (!err.empty()) {
                        note(p.item, UploadStatus::Error, err);
                        kv_release(pool, &p.view);
                        pinned.erase(pinned.begin() + std::ptrdiff_t(k));
                        continue;
                    }
                    // The SET sends the ciphertext: the block need not stay
                    // pinned (nor unevictable) while Redis answers.
                    kv_release(pool, &p.view);
                    p.pinned = false;
                    p.offset = off;
                    off += p.view.length;
                    k++;
                }
            }
            std::vector<SetItem> sets;
            sets.reserve(pinned.size());
            for (auto &p : pinned) {
                if (opts.keyring)
                    sets.push_back(SetItem{p.name,
                                           {p.sealed.data(), p.sealed.size()},
                                           {thread_sealed().data() + p.offset, p.view.length}});
                else
                    sets.push_back(
                        SetItem{p.name,
                                {reinterpret_cast<const uint8_t *>(&p.header), sizeof p.header},
                                {static_cast<const uint8_t *>(p.view.data), p.view.length}});
            }
            std::vector<SetResult> out = cluster.set_many(sets, opts.ttl_s);
            for (size_t k = 0; k < pinned.size(); k++) {
                if (out[k].status == KeyStatus::Ok) {
                    note(pinned[k].item, UploadStatus::Uploaded, "");
                    res.bytes += pinned[k].view.length;
                } else {
                    note(pinned[k].item, UploadStatus::Error, out[k].error);
                }
            }
            release_all();
        }
    } catch (const std::exception &e) {
        release_all();
        if (res.error.empty()) res.error = e.what();
    }
    return res;
}

} // namespace kv::daemon
