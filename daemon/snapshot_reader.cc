// SPDX-License-Identifier: MIT
//
// restore(): a snapshot file into a pool; inspect(): its header alone.
//
// Every length and offset from the file is checked (snapshot_format.cc)
// before it is used. Segments are read in order; the head of the next one
// is read while the current one's data is in flight. Each record gets a
// reservation (kv_reserve) and its extent is read with O_DIRECT straight
// into the reserved block: a whole number of pages, which fits because
// every size class is a multiple of 4 KiB and every block is page-aligned
// (checked once against the pool's class table). Reads of extents that
// follow each other in the file are merged up to max_request_bytes (a
// readv into several reservations; one iovec: a read_fixed). When the last
// read of a block completes its XXH3-64 is checked and the reservation
// committed with that checksum, or aborted: a damaged block is never
// visible, and nothing outside a reservation is ever written.
//
// Eviction history (format 1.1): the rank and CLOCK bit go into the
// reservation before its commit publishes it; the commit time is set on
// the committed entry (the commit writes the current time); chain parents
// are linked by key once every block is in, since a parent may come after
// its child in the file (kv::detail::history_*).
//
// Encrypted files (format 1.2): the header names the pool key; its data
// key is unwrapped and the namespace table opened before anything is added
// to the pool. A block's ciphertext is read into its reservation like
// plain data and decrypted there in place when its last read completes;
// the tag is checked before the checksum, and a block whose tag does not
// match is aborted (the reservation's bytes are never published).
#include "clock.h"
#include "detail.h"
#include "keyring.h"
#include "snapshot.h"
#include "snapshot_format.h"
#include "snapshot_team.h"
#include "uring.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <optional>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace kv::daemon::snapshot {

namespace {

constexpr uint64_t kMaxFixedBuf = 1ULL << 30; // the kernel's cap on one registered buffer
constexpr uint64_t kProgressStep = 64ULL << 20;
constexpr uint32_t kNone = UINT32_MAX;
constexpr uint32_t kRefused = UINT32_MAX; // namespace map: the pool refused the manifest

uint64_t fault_nth(const Options &o) {
    if (o.fail_nth_io) return o.fail_nth_io;
    const char *e = getenv("KVPOOL_FAULT_IO_NTH");
    return e ? strtoull(e, nullptr, 10) : 0;
}

struct RecSlot {
    kv_reservation r{};
    uint64_t length = 0, checksum = 0;
    uint64_t commit_ns = 0; // from the history; 0: none
    uint32_t ns = 0;        // the pool's namespace id
    bool has_parent = false;
    kv_key key{}, parent{};
    uint32_t pieces = 0; // reads not yet completed (+1 while being queued)
    bool failed = false, used = false;
    // Encrypted: what opens the ciphertext (the record is the aad).
    kv_snap_record rec{};
    uint64_t seq = 0;
    uint32_t index = 0;
    crypto::Tag tag{};
    bool verified = false; // decrypted, tag and checksum matched (finish_ready)
};

struct MetaRead {
    bool pending = false;
    int res = 0;
};

// The pump's requests: a read of block data (tags: the record slots it
// fills) or of a part of the format (extra: the index of the MetaRead it
// fills).
class Reader final : private IoOwner {
  public:
    Reader(kv_pool *pool, const std::string &path, const Options &o)
        : pool_(pool), hdr_(kv_pool_header(pool)), path_(path), opts_(o) {}
    ~Reader() { cleanup(); }
    std::expected<Result, Error> run();

  private:
    bool setup();
    bool read_header();
    bool check_origin();
    bool unlock();
    std::string pool_name() const;
    bool map_namespaces();
    bool segments();
    bool scan_for_segment(uint64_t from, uint64_t min_seq, uint64_t *at, uint64_t *seq);
    bool add_record(const Segment &seg, uint32_t i, uint64_t seg_off);
    void link_parents();
    void finish_record(uint32_t slot);
    void finish_ready(bool all);

    uint32_t acquire_rec();
    void drop_piece(uint32_t slot);
    bool start_meta(int m, uint64_t off, uint8_t *buf, uint64_t len);
    int wait_meta(int m); // bytes read, or -errno (also on a ring failure)
    uint64_t my_evictions() const;
    void cleanup();

    void io_done(uint32_t id, IoReq &r, int res) override;
    void io_piece(uint32_t rec) override { recs_[rec].pieces++; }
    bool io_failed() const override { return failed(); }
    bool io_error(IoStep step, int code) override;

    bool fail(int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
    bool failed() const { return err_.has_value(); }
    // Relaxed: a stop request carries no data; seen one block late at worst.
    bool cancelled() const { return opts_.cancel && opts_.cancel->load(std::memory_order_relaxed); }

    kv_pool *pool_;
    const kv_region_header *hdr_;
    const std::string path_;
    const Options &opts_;
    std::optional<Error> err_;
    Result res_;
    int fd_ = -1;
    uint64_t size_ = 0, max_req_ = 0;
    uint8_t *data_base_ = nullptr;
    uint64_t data_len_ = 0;

    AlignedBuffer arena_;  // two segment-head buffers (current, next)
    AlignedBuffer header_; // the file header
    Header header_info_;
    std::vector<uint32_t> ns_map_; // index: position in header_info_.namespaces
    std::vector<RecSlot> recs_;
    std::vector<uint32_t> free_recs_;
    MetaRead meta_[3];
    // Encrypted: blocks read whole, to decrypt and verify (finish_ready),
    // the batch the team is decrypting meanwhile, and the team, with a
    // cipher context per worker.
    std::vector<uint32_t> ready_;
    std::vector<uint32_t> batch_;
    std::unique_ptr<Team> team_;
    std::vector<std::unique_ptr<crypto::Aead>> aeads_;
    std::optional<Pump> io_; // declared after the buffers: destroyed before them

    bool pool_full_ = false;
    uint64_t evictions_at_start_ = 0;
    uint64_t history_ref_ = 0, now_ns_ = 0;
    struct Link {
        uint32_t ns;
        kv_key child, parent;
    };
    std::vector<Link> links_; // restored children with a parent, linked at the end
    uint64_t done_bytes_ = 0, next_progress_ = kProgressStep;
    uint64_t t0_ = mono_ns();
};

bool Reader::fail(int code, const char *fmt, ...) {
    if (failed()) return false;
    char what[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    err_ = Error{-code, "restore " + path_ + ": " + what};
    return false;
}

bool Reader::setup() {
    if (!hdr_) return fail(EINVAL, "no pool");
    data_base_ = reinterpret_cast<uint8_t *>(const_cast<kv_region_header *>(hdr_)) + hdr_->data_off;
    data_len_ = hdr_->data_len;
    max_req_ = std::clamp<uint64_t>(opts_.max_request_bytes & ~(kAlign - 1), kAlign, kMaxFixedBuf);
    const unsigned qd = std::clamp(opts_.queue_depth, 1U, 4096U);

    // Reading whole pages into a block is only safe if every block is
    // page-aligned and a whole number of pages.
    const auto *classes = reinterpret_cast<const kv_class *>(
        reinterpret_cast<const uint8_t *>(hdr_) + hdr_->class_off);
    if (hdr_->data_off % kAlign || hdr_->slab_size % kAlign)
        return fail(EINVAL,
                    "pool data_off %" PRIu64 ", slab_size %" PRIu64
                    ": expected multiples of %" PRIu64,
                    hdr_->data_off, hdr_->slab_size, kAlign);
    for (uint32_t i = 0; i < hdr_->n_classes; i++)
        if (classes[i].block_size % kAlign)
            return fail(EINVAL,
                        "pool size class %u: block_size %" PRIu64
                        ": expected a multiple of %" PRIu64,
                        i, classes[i].block_size, kAlign);

    fd_ = open(path_.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (fd_ < 0 && errno == EINVAL) fd_ = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) return fail(errno, "open: %s", strerror(errno));
    struct stat sb{};
    if (fstat(fd_, &sb) != 0) return fail(errno, "fstat: %s", strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return fail(EINVAL, "not a regular file (mode 0%o)", unsigned(sb.st_mode));
    size_ = uint64_t(sb.st_size);

    auto arena = AlignedBuffer::create(2 * kSegmentHead);
    if (!arena) return fail(arena.error(), "allocate I/O buffers: %s", strerror(arena.error()));
    arena_ = std::move(*arena);
    // One reservation per block being read: enough for queue_depth full
    // requests of 64 KiB blocks (capped: each holds an entry and a block the
    // pool cannot use meanwhile), and at least two segments' worth.
    const uint64_t per_req = std::max<uint64_t>(1, max_req_ / (64 << 10));
    const uint32_t nrecs =
        uint32_t(std::clamp<uint64_t>(qd * per_req, 2 * KV_SNAP_SEGMENT_RECORDS, 2048));
    recs_.resize(nrecs);
    for (uint32_t i = nrecs; i-- > 0;)
        free_recs_.push_back(i);

    auto ring = Ring::create(qd);
    if (!ring)
        return fail(ring.error(), "set up io_uring (%u entries): %s", qd, strerror(ring.error()));
    io_.emplace(std::move(*ring), fd_, Pump::Dir::read, max_req_, qd,
                static_cast<IoOwner &>(*this));
    io_->ring().fail_nth(fault_nth(opts_));
    // As in persist (snapshot_writer.cc), and only into a prefaulted pool:
    // registering pins every page of the data section, and a page never
    // touched is allocated and zeroed right then, serially, before the
    // first read starts, while without registration each read pins just
    // the pages it fills, overlapped with the reads in flight.
    if (opts_.register_buffers && (hdr_->flags & KV_REGION_F_PREFAULTED) &&
        data_len_ <= 4 * size_) {
        std::vector<iovec> bufs;
        for (uint64_t off = 0; off < data_len_; off += kMaxFixedBuf)
            bufs.push_back({data_base_ + off, std::min(kMaxFixedBuf, data_len_ - off)});
        bufs.push_back({arena_.data(), arena_.size()});
        res_.fixed_buffers = io_->ring().register_buffers(bufs) == 0;
    }
    evictions_at_start_ = my_evictions();
    history_ref_ = kv::detail::history_reference(pool_);
    now_ns_ = realtime_ns();
    return true;
}

uint64_t Reader::my_evictions() const {
    // Evictions this thread's reservations made. Not the client slot's
    // counter: the daemon's other threads share the slot (the watermark
    // pass, kvctl evict), and an eviction of theirs would make the restore
    // think its own puts had filled the pool and drop every block after.
    return kv::detail::thread_evictions;
}

bool Reader::read_header() {
    auto first = AlignedBuffer::create(kAlign);
    if (!first) return fail(first.error(), "allocate: %s", strerror(first.error()));
    header_ = std::move(*first);
    if (!start_meta(0, 0, header_.data(), kAlign)) return false;
    int got = wait_meta(0);
    if (got < 0) return fail(-got, "read the header at offset 0: %s", strerror(-got));
    auto len = check_header_prefix({header_.data(), size_t(got)}, size_);
    if (!len) return fail(len.error().code, "header: %s", len.error().what.c_str());
    if (*len > kAlign) {
        auto whole = AlignedBuffer::create(*len);
        if (!whole)
            return fail(whole.error(), "allocate %" PRIu64 " bytes: %s", *len,
                        strerror(whole.error()));
        header_ = std::move(*whole);
        if (!start_meta(0, 0, header_.data(), *len)) return false;
        got = wait_meta(0);
        if (got < 0) return fail(-got, "read the header at offset 0: %s", strerror(-got));
    }
    auto h = parse_header({header_.data(), std::min<size_t>(size_t(got), *len)}, size_);
    if (!h) return fail(h.error().code, "header: %s", h.error().what.c_str());
    header_info_ = std::move(*h);
    return true;
}

bool Reader::check_origin() {
    if (opts_.expect_pool.empty()) return true;
    const kv_snap_header &h = header_info_.hdr;
    const auto *raw = reinterpret_cast<const char *>(h.pool_name);
    const std::string from(raw, strnlen(raw, sizeof h.pool_name));
    if (from.empty()) {
        if (opts_.allow_unnamed) return true;
        return fail(EPERM,
                    "the snapshot does not name the pool it was written from (an older kvpool "
                    "wrote it): only root may restore it into pool %s",
                    opts_.expect_pool.c_str());
    }
    if (from == opts_.expect_pool || opts_.allow_foreign) return true;
    return fail(
        EPERM,
        "the snapshot was written from pool \"%.64s\", not from pool \"%s\": restore it into "
        "%.64s, or as root with --force",
        from.c_str(), opts_.expect_pool.c_str(), from.c_str());
}

std::string Reader::pool_name() const {
    if (!opts_.expect_pool.empty()) return opts_.expect_pool;
    const kv_snap_header &h = header_info_.hdr;
    const auto *raw = reinterpret_cast<const char *>(h.pool_name);
    return std::string(raw, strnlen(raw, sizeof h.pool_name));
}

// An encrypted file: the pool key its header names opens its data key and
// the namespace table (which authenticates the header) before the pool is
// touched.
bool Reader::unlock() {
    if (!header_info_.encrypted()) return true;
    const std::string &id = header_info_.key_id;
    const std::string pool = pool_name();
    const crypto::Key *key = opts_.keyring ? opts_.keyring->find(id) : nullptr;
    if (!key) {
        const std::string have = opts_.keyring ? "configured: " + opts_.keyring->ids()
                                               : "the pool has no [pool.encryption]";
        return fail(ENOKEY,
                    "pool %s: the snapshot is encrypted with key \"%s\", which is not configured "
                    "for the pool (%s)",
                    pool.c_str(), id.c_str(), have.c_str());
    }
    auto ok = unlock_header({header_.data(), header_info_.hdr.header_len}, header_info_, *key);
    if (!ok) return fail(ok.error().code, "pool %s: %s", pool.c_str(), ok.error().what.c_str());
    res_.key_id = id;
    // The helpers decrypt while this thread keeps the reads in flight: one
    // per core, since this thread mostly sleeps on the ring.
    team_ = std::make_unique<Team>(Team::helpers_for_async(4));
    for (unsigned w = 0; w < team_->size(); w++)
        aeads_.push_back(std::make_unique<crypto::Aead>());
    return true;
}

bool Reader::map_namespaces() {
    // A manifest the pool refuses (invalid, table full) costs its records,
    // not the restore.
    for (const kv_snap_namespace &ns : header_info_.namespaces) {
        uint32_t id = kRefused;
        if (kv_ns_register(pool_, &ns.manifest, &id, nullptr) != 0) id = kRefused;
        ns_map_.push_back(id);
    }
    return true;
}

bool Reader::segments() {
    const kv_snap_header &h = header_info_.hdr;
    uint64_t off = h.header_len, seq = 0, n_records = 0, data_bytes = 0, chain = 0;
    int cur = 1; // meta_[1] and meta_[2] hold the two head buffers
    auto head = [&](int m) { return arena_.data() + uint64_t(m - 1) * kSegmentHead; };
    if (!start_meta(cur, off, head(cur), kSegmentHead)) return false;
    for (;;) {
        int got = wait_meta(cur);
        if (got < 0)
            return fail(-got, "read segment %" PRIu64 " at offset %" PRIu64 ": %s", seq, off,
                        strerror(-got));
        uint64_t magic = 0;
        if (got >= 8) memcpy(&magic, head(cur), 8);
        if (magic == KV_SNAP_TRAILER_MAGIC) {
            // Every segment before it was read: a trailer that does not
            // match costs the proof that the file is whole, not blocks.
            TrailerExpect e{seq, n_records, data_bytes, off, chain, h.checksum, size_};
            res_.trailer_problem = check_trailer({head(cur), size_t(got)}, e, header_info_);
            if (size_ - off < kAlign) // the file ends inside the trailer: cut off
                res_.truncated = true;
            else
                res_.trailer_damaged = !res_.trailer_problem.empty();
            res_.file_bytes = std::min(size_, off + kAlign);
            // The trailer ends the snapshot (its file_len says so when it
            // is whole): what follows was not written by the persist.
            if (size_ > res_.file_bytes) res_.trailing_bytes = size_ - res_.file_bytes;
            return true;
        }
        auto seg = parse_segment({head(cur), size_t(got)}, seq, off, size_, header_info_);
        if (!seg) {
            res_.truncated = true;
            res_.file_bytes = off;
            if (seg.error().code == ENODATA) return true; // the file ends here
            // A damaged head costs its own segment only: the next one is
            // found by its magic and checksum on a later page boundary.
            uint64_t at = 0, next_seq = 0;
            if (!scan_for_segment(off + kAlign, seq + 1, &at, &next_seq)) return false;
            if (at == 0) { // none: what came before stays
                res_.damaged_segments++;
                return true;
            }
            res_.damaged_segments += next_seq - seq; // this one and any between
            off = at;
            seq = next_seq;
            if (!start_meta(cur, off, head(cur), kSegmentHead)) return false;
            continue;
        }
        const uint64_t next = off + seg->seg.length;
        if (!seg->data_cut && !start_meta(3 - cur, next, head(3 - cur), kSegmentHead)) return false;
        for (uint32_t i = 0; i < seg->seg.n_records; i++) {
            if (cancelled()) return fail(ECANCELED, "cancelled at segment %" PRIu64, seq);
            if (!add_record(*seg, i, off)) return false;
            data_bytes += seg->records[i].length;
        }
        n_records += seg->seg.n_records;
        chain = chain_segment(chain, seg->seg.checksum);
        seq++;
        if (seg->data_cut) {
            res_.truncated = true;
            res_.file_bytes = size_;
            return true;
        }
        off = next;
        cur = 3 - cur;
    }
}

// Look for the head of segment min_seq or a later one on every page
// boundary from `from` to the end of the file: its magic, then every check
// parse_segment makes (the checksum first). Synchronous reads in chunks: a
// rare path, taken once per damaged head. *at = 0: there is none.
bool Reader::scan_for_segment(uint64_t from, uint64_t min_seq, uint64_t *at, uint64_t *seq) {
    constexpr uint64_t kChunk = 1ULL << 20;
    *at = 0;
    auto buf = AlignedBuffer::create(kChunk + kSegmentHead);
    if (!buf) return fail(buf.error(), "allocate: %s", strerror(buf.error()));
    for (uint64_t base = from; base < size_; base += kChunk) {
        if (cancelled()) return fail(ECANCELED, "cancelled at offset %" PRIu64, base);
        const uint64_t want = std::min<uint64_t>(buf->size(), align_up(size_ - base, kAlign));
        uint64_t got = 0;
        while (got < want) {
            const ssize_t n = pread(fd_, buf->data() + got, want - got, off_t(base + got));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0)
                return fail(errno, "read %" PRIu64 " bytes at offset %" PRIu64 ": %s", want - got,
                            base + got, strerror(errno));
            if (n == 0) break;
            got += uint64_t(n);
        }
        for (uint64_t p = 0; p < kChunk && p + sizeof(kv_snap_segment) <= got; p += kAlign) {
            kv_snap_segment s;
            memcpy(&s, buf->data() + p, sizeof s);
            if (s.magic != KV_SNAP_SEGMENT_MAGIC || s.seq < min_seq) continue;
            auto seg = parse_segment({buf->data() + p, size_t(got - p)}, s.seq, base + p, size_,
                                     header_info_);
            if (!seg) continue;
            *at = base + p;
            *seq = s.seq;
            return true;
        }
    }
    return true;
}

bool Reader::add_record(const Segment &seg, uint32_t i, uint64_t seg_off) {
    const kv_snap_record &rec = seg.records[i];
    const kv_snap_history *hist = header_info_.has_history() ? &seg.history[i] : nullptr;
    auto pos =
        std::lower_bound(header_info_.namespaces.begin(), header_info_.namespaces.end(), rec.ns,
                         [](const kv_snap_namespace &n, uint32_t v) { return n.id < v; });
    const uint32_t ns =
        ns_map_[size_t(pos - header_info_.namespaces.begin())]; // parse_segment checked it exists
    if (!record_in_file(rec, seg_off, size_)) return true;      // cut off: truncated, not dropped
    if (pool_full_ || ns == kRefused || rec.length > hdr_->slab_size) {
        res_.dropped++;
        res_.no_room += pool_full_;
        return true;
    }
    if (hist && hist->ttl_ms && now_ns_ >= hist->commit_ns + uint64_t(hist->ttl_ms) * 1000000) {
        res_.expired++;
        return true;
    }
    const uint32_t slot = acquire_rec();
    if (slot == kNone) return false;
    RecSlot &rs = recs_[slot];
    const kv_key key{rec.key_lo, rec.key_hi};
    kv_put_opts po{};
    po.struct_size = sizeof po;
    po.meta = kv_meta{rec.tokens, rec.priority, rec.user_tag};
    po.ttl_ms = hist ? hist->ttl_ms : 0;
    int rc = kv_reserve_ex(pool_, ns, &key, rec.length, &po, &rs.r);
    if (rc != 0) {
        rs.used = false;
        free_recs_.push_back(slot);
        if (rc == KV_DEDUP || rc == -EBUSY) {
            res_.skipped++;
        } else {
            if (rc == -ENOSPC) pool_full_ = true;
            res_.dropped++;
            res_.no_room += rc == -ENOSPC;
        }
        return true;
    }
    // Never write outside the reservation: the block must be page-aligned,
    // inside the data section, with room for the padded extent.
    const uint64_t padded = align_up(rec.length, kAlign);
    auto *d = static_cast<uint8_t *>(rs.r.data);
    const uint64_t boff = uint64_t(d - data_base_);
    if (d < data_base_ || boff % kAlign || boff > data_len_ || padded > data_len_ - boff ||
        rs.r.length < rec.length) {
        kv_abort(pool_, &rs.r);
        rs.used = false;
        free_recs_.push_back(slot);
        res_.dropped++;
        return true;
    }
    rs.commit_ns = 0;
    rs.has_parent = false;
    if (hist) {
        kv::detail::History h;
        h.rank_age = hist->rank_age;
        h.referenced = hist->flags & KV_SNAP_HISTORY_F_REFERENCED;
        kv::detail::history_apply(pool_, rs.r, h, header_info_.hdr.evict_policy, history_ref_);
        rs.commit_ns = hist->commit_ns;
        rs.ns = ns;
        rs.key = key;
        rs.has_parent = hist->flags & KV_SNAP_HISTORY_F_PARENT;
        rs.parent = kv_key{hist->parent_lo, hist->parent_hi};
    }
    // The pool had to evict to make room: it is full. This block goes in;
    // the rest would only push out blocks restored before them.
    if (my_evictions() != evictions_at_start_) pool_full_ = true;
    rs.length = rec.length;
    rs.checksum = rec.checksum;
    rs.failed = false;
    if (header_info_.encrypted()) {
        rs.rec = rec;
        rs.seq = seg.seg.seq;
        rs.index = i;
        rs.tag = seg.tags[i];
    }
    rs.pieces = 1;
    const bool ok = io_->add_range(seg_off + rec.data_off, d, padded, slot);
    drop_piece(slot);
    if (!ready_.empty() || !batch_.empty()) finish_ready(false);
    return ok;
}

// A chain child restored before its parent could not link to it at its
// reserve; now every block is in. A parent that is not (dropped, evicted,
// not in the file) leaves its child a tail, as a put would.
void Reader::link_parents() {
    for (const Link &l : links_)
        kv::detail::history_link_parent(pool_, l.ns, l.child, l.parent);
    links_.clear();
}

// Decrypt and verify the blocks read whole on the team's helpers, then
// commit or abort each on this thread. The team works on one batch while
// this thread goes on submitting and reaping reads (so the disk and the
// cipher overlap); blocks read meanwhile wait in ready_ for the next batch.
// all: return only once every block read so far is committed or aborted.
void Reader::finish_ready(bool all) {
    for (;;) {
        if (!batch_.empty()) {
            if (!all && !team_->idle()) return; // still decrypting: back to the reads
            team_->wait();
            for (uint32_t slot : batch_)
                finish_record(slot);
            batch_.clear();
        }
        if (ready_.empty()) return;
        batch_.swap(ready_);
        const crypto::Key *key = &header_info_.crypt->key;
        team_->start(batch_.size(), [this, key](unsigned w, size_t i) {
            RecSlot &rs = recs_[batch_[i]];
            auto *d = static_cast<uint8_t *>(rs.r.data);
            const kv_view v{d, rs.length, rs.checksum, {}, {}};
            rs.verified = !rs.failed &&
                          open_extent(*aeads_[w], *key, rs.seq, rs.index, rs.rec, d, d, rs.tag) &&
                          kv_view_verify(&v) == 0;
        });
        if (!all) return;
    }
}

void Reader::finish_record(uint32_t slot) {
    RecSlot &rs = recs_[slot];
    // libkv's own check (its fastest XXH3-64 for this CPU): the same sum
    // kv_put computes and readers verify against. Encrypted: done with the
    // decryption (finish_ready), the tag first.
    const kv_view v{rs.r.data, rs.length, rs.checksum, {}, {}};
    const bool ok = header_info_.encrypted() ? rs.verified : !rs.failed && kv_view_verify(&v) == 0;
    const uint32_t e = kv::detail::PinA::entry(rs.r.handle[0]);
    const uint32_t gen = kv::detail::PinA::gen(rs.r.handle[0]);
    if (ok && kv_commit(pool_, &rs.r, KV_COMMIT_F_CHECKSUM, rs.checksum) == 0) {
        res_.blocks++;
        res_.bytes += rs.length;
        if (rs.commit_ns) kv::detail::history_set_commit_time(pool_, e, gen, rs.commit_ns);
        if (rs.has_parent) links_.push_back({rs.ns, rs.key, rs.parent});
    } else {
        if (!ok) kv_abort(pool_, &rs.r);
        res_.dropped++;
        res_.corrupt += !ok;
    }
    rs.used = false;
    free_recs_.push_back(slot);
}

uint32_t Reader::acquire_rec() {
    while (free_recs_.empty()) {
        if (!ready_.empty() || !batch_.empty()) { // blocks decrypted or to decrypt hold slots
            finish_ready(true);
            continue;
        }
        if (!io_->wait_some()) return kNone;
    }
    const uint32_t slot = free_recs_.back();
    free_recs_.pop_back();
    recs_[slot].used = true;
    recs_[slot].pieces = 0;
    return slot;
}

void Reader::drop_piece(uint32_t slot) {
    if (--recs_[slot].pieces != 0) return;
    if (header_info_.encrypted())
        ready_.push_back(slot); // finish_ready, once this completion's blocks are in
    else
        finish_record(slot);
}

bool Reader::io_error(IoStep step, int code) {
    switch (step) {
    case IoStep::submit:
        return fail(code, "io_uring submit: %s", strerror(code));
    case IoStep::wait:
        return fail(code, "io_uring wait: %s", strerror(code));
    case IoStep::no_entry:
        return false; // the request was handed back: its blocks are dropped
    case IoStep::idle:
        break;
    }
    return fail(code, "internal error: waiting with no I/O in flight");
}

void Reader::io_done(uint32_t, IoReq &r, int res) {
    if (r.extra != kNone) {
        meta_[r.extra].pending = false;
        meta_[r.extra].res = res;
    } else {
        // An I/O error or a short read (the file changed under us) costs the
        // blocks of this request; the checksum would catch a short read too.
        const bool bad = res < 0 || uint64_t(res) < r.len;
        for (uint32_t rec : r.tags) {
            if (bad) recs_[rec].failed = true;
            drop_piece(rec);
        }
        if (!ready_.empty() || !batch_.empty()) finish_ready(false);
        if (res > 0) done_bytes_ += uint64_t(res);
    }
    if (opts_.progress && done_bytes_ >= next_progress_) {
        next_progress_ = done_bytes_ + kProgressStep;
        opts_.progress(done_bytes_, size_);
    }
}

bool Reader::start_meta(int m, uint64_t off, uint8_t *buf, uint64_t len) {
    if (!io_->flush()) return false; // a request of its own
    if (!io_->add_piece(off, buf, len, kNone)) return false;
    io_->filling()->extra = uint32_t(m);
    meta_[m].pending = true;
    meta_[m].res = 0;
    return io_->flush();
}

int Reader::wait_meta(int m) {
    while (meta_[m].pending) {
        if (!io_->flush()) break;
        if (!io_->reap(true)) break;
    }
    if (meta_[m].pending) return err_ ? err_->code : -EIO;
    return meta_[m].res;
}

void Reader::cleanup() {
    // The helpers write into reservations: they finish before any is aborted.
    if (team_) team_->wait();
    if (io_) io_->drain(); // what was queued, never submitted: those blocks are not read
    for (RecSlot &rs : recs_) {
        if (!rs.used) continue;
        kv_abort(pool_, &rs.r);
        rs.used = false;
    }
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
}

std::expected<Result, Error> Reader::run() {
    // The header is authenticated (unlock) before anything in it is trusted.
    bool ok =
        setup() && read_header() && unlock() && check_origin() && map_namespaces() && segments();
    // Whatever is in flight completes (and is committed when it verifies).
    if (ok) {
        ok = io_->flush();
        while (ok && io_->in_flight())
            ok = io_->reap(true);
        if (ok && team_) finish_ready(true);
    }
    cleanup();
    link_parents(); // also after a failure: what was committed stays
    if (!ok) {
        if (!failed()) fail(EIO, "internal error");
        return std::unexpected(*err_);
    }
    res_.evicted = my_evictions() - evictions_at_start_;
    res_.seconds = seconds_since(t0_);
    if (opts_.progress) opts_.progress(done_bytes_, size_);
    return res_;
}

} // namespace

std::expected<Result, Error> restore(kv_pool *pool, const std::string &path, const Options &opts) {
    try {
        Reader r(pool, path, opts);
        return r.run();
    } catch (const std::bad_alloc &) {
        return std::unexpected(Error{-ENOMEM, "restore " + path + ": out of memory"});
    } catch (...) {
        return std::unexpected(Error{-EIO, "restore " + path + ": unexpected exception"});
    }
}

std::expected<kv_snap_header, Error> inspect(const std::string &path) {
    auto err = [&](int code, const std::string &what) {
        return std::unexpected(Error{-code, "inspect " + path + ": " + what});
    };
    try {
        int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return err(errno, std::string("open: ") + strerror(errno));
        struct Closer {
            int fd;
            ~Closer() { close(fd); }
        } closer{fd};
        struct stat sb{};
        if (fstat(fd, &sb) != 0) return err(errno, std::string("fstat: ") + strerror(errno));
        const uint64_t size = uint64_t(sb.st_size);
        auto read_at = [&](std::vector<uint8_t> &buf, uint64_t len) -> int {
            buf.assign(len, 0);
            uint64_t done = 0;
            while (done < len) {
                ssize_t n = pread(fd, buf.data() + done, len - done, off_t(done));
                if (n < 0 && errno == EINTR) continue;
                if (n < 0) return -errno;
                if (n == 0) break;
                done += uint64_t(n);
            }
            buf.resize(done);
            return 0;
        };
        std::vector<uint8_t> buf;
        if (int rc = read_at(buf, kAlign); rc < 0)
            return err(-rc, std::string("read: ") + strerror(-rc));
        auto len = check_header_prefix(buf, size);
        if (!len) return err(len.error().code, "header: " + len.error().what);
        if (int rc = read_at(buf, *len); rc < 0)
            return err(-rc, std::string("read: ") + strerror(-rc));
        auto h = parse_header(buf, size);
        if (!h) return err(h.error().code, "header: " + h.error().what);
        return h->hdr;
    } catch (const std::bad_alloc &) {
        return err(ENOMEM, "out of memory");
    }
}

} // namespace kv::daemon::snapshot
