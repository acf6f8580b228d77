// SPDX-License-Identifier: MIT
//
// persist(): a live pool to a snapshot file.
//
// One pass over the entry table. Each committed row is pinned (as kv_get
// does, but counting no hit and leaving its eviction rank alone:
// kv::detail::pin_for_snapshot); the pin is what makes the write safe: a
// pinned block is immutable and its memory is not reused until released.
// Each block gets a record in the open segment and an extent behind the
// segment's head, and its pages are written straight from the region. Extents that follow each
// other in the file are merged into one request of up to max_request_bytes (a writev whose iovecs
// point into the region; one iovec: a write_fixed from the registered data section), and
// queue_depth requests stay in flight. A segment's head is written once its last record is known,
// from a buffer of our own. A pin is released as soon as the last request covering its block
// completes, so the pins held stay bounded (see kPinBudget).
//
// Each record's eviction history (kv::detail::history_read: commit time,
// rank as an age against one reference taken before the scan, time to
// live, CLOCK bit, the parent's key) goes into the second page of the
// segment head (format 1.1, KV_SNAP_COMPAT_HISTORY).
//
// Each key is written once: the scan reads the live table, where a key
// removed and put again while the scan runs lands in a new row that the
// scan may meet after the old one (the first met is kept; skipped counts
// the second).
//
// Only a block's last partial page is copied: into a page of our own,
// zero-filled past the length, because the region holds a former block's
// bytes there and the format promises zero padding.
//
// Encrypted (Options::keyring): the region cannot be written as it is, so
// each block is sealed from the region into the staging ring (a buffer of
// our own, registered in place of the data section) and written from
// there; its padding is zeroed in the ring. The ring is allocated in file
// order and freed as writes complete (out of order: a span is reused once
// every span before it is done too); the scan waits for completions when
// it is full. Blocks are sealed in batches of about one request's bytes,
// spread over a team of threads (snapshot_team.h: one core of AES-GCM is
// slower than the disk), while the kernel works on the writes already
// submitted; a batch is queued for writing in file order once sealed, and
// always before its segment's head is sealed (the head holds its tags).
//
// The file is preallocated ahead of the writes (fallocate): ext4 serializes
// O_DIRECT writes that extend the file (exclusive inode lock, waited for
// synchronously), while writes inside i_size run in parallel. The excess is
// cut off at the end.
//
// Spare recycling (Options::recycle_spare): the snapshot a persist replaces
// is kept as PATH.spare, and the next persist renames it to PATH.tmp and
// writes over it instead of creating a new file. Into a fresh preallocated
// file, the fdatasync must also commit the conversion of every unwritten
// extent, and the rename over the old snapshot frees all of its blocks; on
// ext4 each of those can cost more than the writes themselves.
// Overwriting blocks that are already written needs neither. Safety does
// not change: PATH is only ever replaced by a complete, fdatasync'ed file
// (renameat2 RENAME_EXCHANGE, then the old one becomes the spare), every
// byte of [0, file length) is rewritten (checked: the bytes written must
// add up to the file length), and the excess past the new end is truncated.
#include "clock.h"
#include "detail.h"
#include "keyring.h"
#include "snapshot.h"
#include "snapshot_format.h"
#include "snapshot_team.h"
#include "uring.h"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <memory>
#include <optional>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_set>
#include <vector>

namespace kv::daemon::snapshot {

namespace {

constexpr uint64_t kMaxFixedBuf = 1ULL << 30; // the kernel's cap on one registered buffer
constexpr uint64_t kProgressStep = 64ULL << 20;
constexpr uint64_t kPreallocStep = 256ULL << 20;
constexpr unsigned kHeadSlots = 8;    // segment heads written or being filled
constexpr unsigned kEntryBatch = 256; // rows per kv_pool_entries call
constexpr uint32_t kNone = UINT32_MAX;

// Pins held at once: enough to keep queue_depth requests of merged small
// blocks busy, and at most half of this client's journal, which the
// daemon's other work on the same handle also uses.
uint32_t pin_budget(const kv_region_header &h) {
    return std::clamp<uint32_t>(h.pins_per_client / 2, 1, 1024);
}

uint64_t fault_nth(const Options &o) {
    if (o.fail_nth_io) return o.fail_nth_io;
    const char *e = getenv("KVPOOL_FAULT_IO_NTH");
    return e ? strtoull(e, nullptr, 10) : 0;
}

// A block's identity in the pool: its namespace and key.
struct Written {
    uint64_t lo, hi;
    uint32_t ns;
    bool operator==(const Written &) const = default;
};
struct WrittenHash {
    size_t operator()(const Written &w) const {
        return size_t((w.lo ^ (w.hi * 0x9e3779b97f4a7c15ULL)) * 0xbf58476d1ce4e5b9ULL + w.ns);
    }
};

struct PinSlot {
    kv_view view{};
    uint32_t pieces =
        0; // requests not yet completed that cover this block (+1 while it is being added)
    bool used = false;
    uint64_t stage = UINT64_MAX; // encrypted: the staging span of the block's ciphertext
};

// The staging ring of an encrypted persist: spans handed out in order,
// each freed when its block's writes are done; space comes back in order.
class StageRing {
  public:
    void init(uint8_t *base, uint64_t size) { base_ = base, size_ = size; }
    uint64_t size() const { return size_; }
    // A span of len bytes (len <= size()), or nullptr when the ring is full.
    uint8_t *take(uint64_t len, uint64_t *id) {
        uint64_t at = head_ % size_;
        uint64_t skip = at + len > size_ ? size_ - at : 0; // no span wraps
        if (head_ + skip + len - tail_ > size_) return nullptr;
        if (skip) {
            spans_.push_back({head_ + skip, true});
            head_ += skip;
            at = 0;
        }
        head_ += len;
        *id = first_ + spans_.size();
        spans_.push_back({head_, false});
        return base_ + at;
    }
    void done(uint64_t id) {
        spans_[size_t(id - first_)].done = true;
        while (!spans_.empty() && spans_.front().done) {
            tail_ = spans_.front().end;
            spans_.pop_front();
            first_++;
        }
    }

  private:
    struct Span {
        uint64_t end; // logical offset just past it
        bool done;
    };
    uint8_t *base_ = nullptr;
    uint64_t size_ = 0, head_ = 0, tail_ = 0, first_ = 0;
    std::deque<Span> spans_;
};

// The pump's requests: tags are pin slots (one per piece of a block in
// the request), extra the head slot a request writes.
class Writer final : private IoOwner {
  public:
    Writer(kv_pool *pool, const std::string &name, const std::string &path, const Options &o)
        : pool_(pool), hdr_(kv_pool_header(pool)), name_(name), path_(path), tmp_(path + ".tmp"),
          spare_(path + ".spare"), opts_(o) {}
    ~Writer();
    std::expected<Result, Error> run();

  private:
    bool setup();
    bool open_target(); // PATH.tmp: the spare to write over, or a new file
    bool restrict_access();
    bool write_header();
    bool scan();
    bool pin_and_add(const kv_entry_info &row);
    bool add_block(uint32_t pin, const kv_entry_info &row);
    bool open_segment();
    bool close_segment();
    bool finish();

    uint32_t acquire_pin();
    void drop_piece(uint32_t pin);
    bool ensure_alloc(uint64_t end);

    void io_done(uint32_t id, IoReq &r, int res) override;
    void io_piece(uint32_t pin) override { pins_[pin].pieces++; }
    bool io_failed() const override { return failed(); }
    bool io_error(IoStep step, int code) override;
    void cleanup();

    bool fail(int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
    bool failed() const { return err_.has_value(); }
    // Relaxed: a stop request carries no data; seen one block late at worst.
    bool cancelled() const { return opts_.cancel && opts_.cancel->load(std::memory_order_relaxed); }
    uint8_t *head_buf(uint32_t slot) const { return arena_.data() + uint64_t(slot) * kSegmentHead; }
    uint8_t *tail_page(uint32_t pin) const {
        return arena_.data() + kHeadSlots * kSegmentHead + uint64_t(pin) * kAlign;
    }
    uint8_t *trailer_page() const { return tail_page(uint32_t(pins_.size())); }
    bool encrypted() const { return sealing_.has_value(); }
    bool seal_block(uint32_t pin, const kv_snap_record &rec, uint64_t off);
    bool flush_batch();
    bool drain_sealing();
    bool flush_all() { return flush_batch() && drain_sealing(); }

    kv_pool *pool_;
    const kv_region_header *hdr_;
    const std::string name_, path_, tmp_, spare_;
    const Options &opts_;
    std::optional<Error> err_;
    Result res_;
    int fd_ = -1;
    bool created_ = false, renamed_ = false, done_ = false;
    uint64_t max_req_ = 0;
    const uint8_t *data_base_ = nullptr;
    uint64_t data_len_ = 0;

    // Declared before the ring: destroyed after it.
    AlignedBuffer arena_;  // head slots, tail pages (one per pin slot), trailer page
    AlignedBuffer header_; // the file header
    AlignedBuffer stage_;  // encrypted: the staging ring's memory
    StageRing ring_;
    std::optional<Sealing> sealing_; // encrypted: this snapshot's data key
    // Encrypted: blocks waiting to be sealed (flush_batch), the batch the
    // team is sealing meanwhile (drain_sealing queues its writes), and the
    // team, with a cipher context per worker.
    struct Pending {
        uint32_t pin;
        kv_snap_record rec;
        uint64_t seq, off;
        uint32_t index;
        uint8_t *out;    // its span of the staging ring
        uint8_t *tag_at; // its tag's place in the segment head
        bool ok;
    };
    std::vector<Pending> batch_, sealing_batch_;
    uint64_t batch_bytes_ = 0;
    size_t batch_max_ = 1;
    std::unique_ptr<Team> team_;
    std::vector<std::unique_ptr<crypto::Aead>> aeads_;
    std::vector<PinSlot> pins_;
    std::vector<uint32_t> free_pins_;
    std::vector<uint32_t> free_heads_;
    std::optional<Pump> io_;

    // Every key written: the scan reads the live entry table, and a key
    // removed and put again during it gets a new row, which the scan may
    // meet after it wrote the old one.
    std::unordered_set<Written, WrittenHash> written_;
    std::vector<kv_snap_namespace> namespaces_;
    std::vector<uint8_t> ns_known_; // by id
    uint64_t header_checksum_ = 0;
    uint64_t history_ref_ = 0; // rank reference every age is taken against
    uint64_t front_ = 0;       // file offset where the next segment (or the trailer) goes
    uint32_t seg_head_ = kNone;
    uint64_t seg_off_ = 0, seg_cursor_ = 0, seq_ = 0, segments_hash_ = 0, n_records_ = 0;
    uint32_t seg_n_ = 0;
    bool prealloc_ = true;
    uint64_t alloc_end_ = 0, total_est_ = 0, done_bytes_ = 0, next_progress_ = kProgressStep;
    uint64_t t0_ = mono_ns();
};

bool Writer::fail(int code, const char *fmt, ...) {
    if (failed()) return false; // the first error is the one to report
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    err_ = Error{-code, "persist " + path_ + ": " + what + ": " + strerror(code)};
    return false;
}

bool Writer::setup() {
    if (!hdr_) return fail(EINVAL, "no pool");
    data_base_ = reinterpret_cast<const uint8_t *>(hdr_) + hdr_->data_off;
    data_len_ = hdr_->data_len;
    max_req_ = std::clamp<uint64_t>(opts_.max_request_bytes & ~(kAlign - 1), kAlign, kMaxFixedBuf);
    const unsigned qd = std::clamp(opts_.queue_depth, 1U, 4096U);

    // Namespaces in use now; ids never change once registered.
    ns_known_.assign(hdr_->max_namespaces, 0);
    for (uint32_t i = 0; i < hdr_->max_namespaces; i++) {
        kv_snap_namespace ns{};
        if (kv_ns_get(pool_, i, &ns.manifest, &ns.chain_seed) != 0) continue;
        ns.id = i;
        namespaces_.push_back(ns);
        ns_known_[i] = 1;
    }

    if (opts_.keyring) {
        const Keyring &kr = *opts_.keyring;
        auto sealing = new_sealing(kr.current(), kr.current_id());
        if (!sealing)
            return fail(EIO, "encrypt with key \"%s\": %s", kr.current_id().c_str(),
                        sealing.error().c_str());
        sealing_ = std::move(*sealing);
        res_.key_id = kr.current_id();
    }

    if (!open_target()) return false;

    const uint32_t npins = pin_budget(*hdr_);
    auto arena = AlignedBuffer::create(kHeadSlots * kSegmentHead + (uint64_t(npins) + 1) * kAlign);
    if (!arena) return fail(arena.error(), "allocate I/O buffers");
    arena_ = std::move(*arena);
    pins_.resize(npins);
    for (uint32_t i = npins; i-- > 0;)
        free_pins_.push_back(i);
    for (uint32_t i = kHeadSlots; i-- > 0;)
        free_heads_.push_back(i);

    auto ring = Ring::create(qd);
    if (!ring) return fail(ring.error(), "set up io_uring (%u entries)", qd);
    io_.emplace(std::move(*ring), fd_, Pump::Dir::write, max_req_, qd,
                static_cast<IoOwner &>(*this));
    io_->ring().fail_nth(fault_nth(opts_));
    kv_stats st{};
    if (kv_pool_stats(pool_, &st) == 0 && st.bytes_committed > st.bytes_freed)
        total_est_ = st.bytes_committed - st.bytes_freed;
    if (encrypted()) {
        // Room for every request in flight plus the batch being sealed,
        // and for the largest block. Not more: the ring is fresh memory,
        // faulted in (registering it too) on every persist.
        const uint64_t inflight =
            std::clamp<uint64_t>(uint64_t(qd + 1) * max_req_, 16ULL << 20, 256ULL << 20);
        auto st = AlignedBuffer::create(std::max(inflight, align_up(hdr_->slab_size, kAlign)));
        if (!st) return fail(st.error(), "allocate the staging buffer");
        stage_ = std::move(*st);
        ring_.init(stage_.data(), stage_.size());
        // The helpers seal while this thread pins blocks and keeps the
        // writes in flight: one per core, since this thread mostly sleeps
        // on the ring.
        team_ = std::make_unique<Team>(Team::helpers_for_async(4));
        for (unsigned w = 0; w < team_->size(); w++)
            aeads_.push_back(std::make_unique<crypto::Aead>());
        // Each pending block holds a pin: leave most of them to the I/O.
        batch_max_ = std::clamp<size_t>(npins / 4, 1, 64);
        if (opts_.register_buffers && stage_.size() <= kMaxFixedBuf) {
            const iovec bufs[] = {{stage_.data(), stage_.size()}, {arena_.data(), arena_.size()}};
            res_.fixed_buffers = io_->ring().register_buffers(bufs) == 0;
        }
    } else if (opts_.register_buffers && data_len_ <= 4 * total_est_) {
        // The data section in pieces of at most 1 GiB (slab boundaries: a
        // block never straddles two), then our own buffers. Registering pins
        // (and on a fresh pool first zeroes) every page of the section,
        // serially, before the first write: not worth it for a pool much
        // larger than what is written, where per-request pinning touches
        // only that. Failure (the locked-memory limit, memory the kernel
        // cannot pin) only costs the fixed-buffer fast path.
        std::vector<iovec> bufs;
        for (uint64_t off = 0; off < data_len_; off += kMaxFixedBuf)
            bufs.push_back(
                {const_cast<uint8_t *>(data_base_) + off, std::min(kMaxFixedBuf, data_len_ - off)});
        bufs.push_back({arena_.data(), arena_.size()});
        res_.fixed_buffers = io_->ring().register_buffers(bufs) == 0;
    }
    return true;
}

bool Writer::open_target() {
    // A spare (the snapshot before the current one) becomes PATH.tmp and is
    // written over; a stale PATH.tmp (an interrupted persist) is replaced.
    if (opts_.recycle_spare && rename(spare_.c_str(), tmp_.c_str()) == 0) {
        fd_ = open(tmp_.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
        struct stat sb{};
        if (fd_ >= 0 && fstat(fd_, &sb) == 0 && S_ISREG(sb.st_mode)) {
            created_ = true;
            res_.recycled = true;
            alloc_end_ = uint64_t(sb.st_size); // already allocated (and written)
            return restrict_access();
        }
        if (fd_ >= 0) close(fd_);
        fd_ = -1; // not usable (no O_DIRECT, not a file): start afresh below
    }
    fd_ = open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);
    if (fd_ < 0 && errno == EINVAL) // the filesystem has no O_DIRECT: buffered, still fsync'ed
        fd_ = open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd_ < 0) return fail(errno, "create %s", tmp_.c_str());
    created_ = true;
    return restrict_access();
}

// A snapshot holds every block of its pool: readable by root and the
// pool's group only. Set on the file before any block is written, whatever
// the umask, and whatever mode or group a recycled spare had.
bool Writer::restrict_access() {
    if (opts_.file_gid >= 0 && fchown(fd_, uid_t(-1), gid_t(opts_.file_gid)) != 0)
        return fail(errno, "set group %d on %s", opts_.file_gid, tmp_.c_str());
    const mode_t mode = opts_.file_gid >= 0 ? 0640 : 0600;
    if (fchmod(fd_, mode) != 0) return fail(errno, "set mode 0%o on %s", mode, tmp_.c_str());
    return true;
}

bool Writer::write_header() {
    kv_snap_header h{};
    h.snapshot_ns = realtime_ns();
    h.pool_id_lo = hdr_->pool_id_lo;
    h.pool_id_hi = hdr_->pool_id_hi;
    h.region_size = hdr_->region_size;
    h.data_len = hdr_->data_len;
    h.slab_size = hdr_->slab_size;
    h.page_size = hdr_->page_size;
    h.region_abi_major = hdr_->abi_major;
    h.compat_features = KV_SNAP_COMPAT_HISTORY;
    h.evict_policy = pool_->policy;
    memcpy(h.pool_name, name_.data(), std::min(name_.size(), sizeof h.pool_name));
    const uint64_t len = header_len_for(sizeof h, namespaces_.size());
    auto buf = AlignedBuffer::create(len);
    if (!buf) return fail(buf.error(), "allocate the %" PRIu64 "-byte header", len);
    header_ = std::move(*buf);
    if (!build_header({header_.data(), len}, h, namespaces_, sealing_ ? &*sealing_ : nullptr))
        return fail(EIO, "encrypt the header");
    memcpy(&header_checksum_, header_.data() + offsetof(kv_snap_header, checksum),
           sizeof header_checksum_);
    front_ = len;
    // The first preallocation covers the estimate; later ones step. A
    // recycled spare is allocated already: it is only extended when this
    // snapshot outgrows it (so there is no excess to truncate when the pool
    // holds what it held last time).
    const uint64_t first = res_.recycled ? len : len + total_est_ + total_est_ / 64 + kAlign;
    if (!ensure_alloc(first)) return false;
    return io_->add_piece(0, header_.data(), len, kNone) && io_->flush();
}

bool Writer::scan() {
    // One reference for every block: ages taken against a clock that moved
    // on during the scan would misorder blocks met early and late.
    history_ref_ = kv::detail::history_reference(pool_);
    std::vector<kv_entry_info> rows(kEntryBatch);
    uint64_t cursor = 0;
    while (cursor < hdr_->n_entries) {
        int k = kv_pool_entries(pool_, &cursor, rows.data(), rows.size());
        if (k < 0) return fail(-k, "read the entry table at row %" PRIu64, cursor);
        for (int i = 0; i < k; i++) {
            if (rows[i].state != KV_ENTRY_COMMITTED) continue;
            if (cancelled())
                return fail(ECANCELED, "cancelled after %" PRIu64 " blocks", res_.blocks);
            if (!pin_and_add(rows[i])) return false;
        }
        if (!io_->reap(false)) return false;
    }
    return true;
}

bool Writer::pin_and_add(const kv_entry_info &row) {
    if (row.ns >= ns_known_.size() || !ns_known_[row.ns]) { // registered after the header was built
        res_.skipped++;
        return true;
    }
    if (written_.contains({row.key.lo, row.key.hi, row.ns})) { // written from an earlier row
        res_.skipped++;
        return true;
    }
    uint32_t pin = acquire_pin();
    if (pin == kNone) return false;
    PinSlot &ps = pins_[pin];
    for (;;) {
        int rc = kv::detail::pin_for_snapshot(pool_, row.ns, row.key, &ps.view);
        if (rc == 0) break;
        if (rc == -ENOBUFS &&
            (!batch_.empty() || !sealing_batch_.empty() || io_->filling() || io_->in_flight())) {
            // Our other pins come back as their writes complete.
            if (!flush_all() || !io_->flush() || !io_->reap(true)) return false;
            continue;
        }
        ps.used = false;
        free_pins_.push_back(pin);
        if (rc == -ENOENT ||
            rc == -ENOBUFS) { // removed since the row was read / pins all taken elsewhere
            res_.skipped++;
            return true;
        }
        return fail(-rc, "pin block %" PRIu64 ":%016" PRIx64 "%016" PRIx64, uint64_t(row.ns),
                    row.key.hi, row.key.lo);
    }
    // The view is what gets stored (a re-commit of the key since the row
    // was read is as good). Refuse anything the region could not hold.
    const auto *d = static_cast<const uint8_t *>(ps.view.data);
    const uint64_t off = uint64_t(d - data_base_);
    if (d < data_base_ || off % kAlign || ps.view.length == 0 || ps.view.length > hdr_->slab_size ||
        off > data_len_ || align_up(ps.view.length, kAlign) > data_len_ - off) {
        kv_release(pool_, &ps.view);
        ps.used = false;
        free_pins_.push_back(pin);
        res_.skipped++;
        return true;
    }
    return add_block(pin, row);
}

bool Writer::add_block(uint32_t pin, const kv_entry_info &row) {
    PinSlot &ps = pins_[pin];
    const kv_view &v = ps.view;
    const uint32_t max_records =
        encrypted() ? KV_SNAP_SEGMENT_RECORDS_ENCRYPTED : KV_SNAP_SEGMENT_RECORDS_HISTORY;
    if (seg_head_ != kNone && seg_n_ == max_records && !close_segment()) return false;
    if (seg_head_ == kNone && !open_segment()) return false;
    const uint64_t padded = align_up(v.length, kAlign);
    const uint64_t off = seg_off_ + seg_cursor_;
    if (!ensure_alloc(off + padded)) return false;

    kv_snap_record rec{};
    rec.key_lo = row.key.lo;
    rec.key_hi = row.key.hi;
    rec.ns = row.ns;
    rec.tokens = v.meta.tokens;
    rec.length = v.length;
    rec.checksum = v.checksum;
    rec.data_off = seg_cursor_;
    rec.user_tag = v.meta.user_tag;
    rec.priority = v.meta.priority;
    memcpy(head_buf(seg_head_) + sizeof(kv_snap_segment) + uint64_t(seg_n_) * sizeof rec, &rec,
           sizeof rec);
    written_.insert({row.key.lo, row.key.hi, row.ns});
    kv::detail::History h;
    kv_snap_history hist{};
    if (kv::detail::history_read(pool_, v, history_ref_, &h) == 0) {
        hist.commit_ns = h.commit_ns;
        hist.rank_age = h.rank_age;
        hist.ttl_ms = h.ttl_ms;
        hist.flags = h.referenced ? KV_SNAP_HISTORY_F_REFERENCED : 0;
        if (h.has_parent) {
            hist.flags |= KV_SNAP_HISTORY_F_PARENT;
            hist.parent_lo = h.parent.lo;
            hist.parent_hi = h.parent.hi;
        }
    }
    memcpy(head_buf(seg_head_) + KV_SNAP_SEGMENT_HISTORY_OFF + uint64_t(seg_n_) * sizeof hist,
           &hist, sizeof hist);
    if (encrypted()) {
        if (!seal_block(pin, rec, off)) return false;
        seg_n_++;
        seg_cursor_ += padded;
        res_.blocks++;
        res_.bytes += v.length;
        return true;
    }
    seg_n_++;
    seg_cursor_ += padded;
    res_.blocks++;
    res_.bytes += v.length;

    // pieces starts at 1 so that a completion reaped while the pieces are
    // queued (add_piece may wait for a free request) cannot release the pin.
    ps.pieces = 1;
    const auto *d = static_cast<const uint8_t *>(v.data);
    const uint64_t full = v.length & ~(kAlign - 1), tail = v.length - full;
    bool ok = full == 0 || io_->add_range(off, d, full, pin);
    if (ok && tail) {
        uint8_t *page = tail_page(pin);
        memcpy(page, d + full, tail);
        memset(page + tail, 0, kAlign - tail);
        ok = io_->add_piece(off + full, page, kAlign, pin);
    }
    drop_piece(pin);
    return ok;
}

// Give the pinned block a span of the staging ring and add it to the
// batch; the batch is sealed and queued once it holds about a request.
bool Writer::seal_block(uint32_t pin, const kv_snap_record &rec, uint64_t off) {
    PinSlot &ps = pins_[pin];
    const uint64_t padded = align_up(rec.length, kAlign);
    uint64_t id = 0;
    uint8_t *out;
    while (!(out = ring_.take(padded, &id))) {
        // The batches' spans come back only once they are written.
        if (!batch_.empty()           ? !flush_batch()
            : !sealing_batch_.empty() ? !drain_sealing()
                                      : !io_->wait_some())
            return false;
    }
    ps.stage = id;
    ps.pieces = 1; // until flush_batch has queued its writes
    uint8_t *tag_at =
        head_buf(seg_head_) + KV_SNAP_SEGMENT_TAGS_OFF + uint64_t(seg_n_) * crypto::kTagBytes;
    batch_.push_back({pin, rec, seq_, off, seg_n_, out, tag_at, false});
    batch_bytes_ += padded;
    if (batch_bytes_ >= max_req_ || batch_.size() >= batch_max_) return flush_batch();
    return true;
}

// Hand the batch to the team to seal, once the batch before it is sealed
// and its writes queued: one batch is sealed while this thread pins the
// next and the writes of the ones before stay in flight.
bool Writer::flush_batch() {
    if (batch_.empty()) return true;
    if (!drain_sealing()) return false;
    sealing_batch_.swap(batch_);
    batch_.clear();
    batch_bytes_ = 0;
    const crypto::Key *key = &sealing_->crypt->key;
    team_->start(sealing_batch_.size(), [this, key](unsigned w, size_t i) {
        Pending &b = sealing_batch_[i];
        crypto::Tag tag;
        const auto *in = static_cast<const uint8_t *>(pins_[b.pin].view.data);
        b.ok = seal_extent(*aeads_[w], *key, b.seq, b.index, b.rec, in, b.out, tag);
        memset(b.out + b.rec.length, 0, align_up(b.rec.length, kAlign) - b.rec.length);
        memcpy(b.tag_at, tag.data(), tag.size());
    });
    return true;
}

// Wait for the batch being sealed, then queue its writes in file order.
bool Writer::drain_sealing() {
    if (sealing_batch_.empty()) return true;
    team_->wait();
    bool ok = true;
    for (const Pending &b : sealing_batch_) {
        if (ok && !b.ok)
            ok = fail(EIO, "encrypt block %" PRIu64 ":%016" PRIx64 "%016" PRIx64,
                      uint64_t(b.rec.ns), b.rec.key_hi, b.rec.key_lo);
        if (ok) ok = io_->add_range(b.off, b.out, align_up(b.rec.length, kAlign), b.pin);
        drop_piece(b.pin);
    }
    sealing_batch_.clear();
    return ok;
}

bool Writer::open_segment() {
    while (free_heads_.empty())
        if (!io_->wait_some()) return false;
    seg_head_ = free_heads_.back();
    free_heads_.pop_back();
    memset(head_buf(seg_head_), 0, kSegmentHead);
    seg_off_ = front_;
    seg_cursor_ = kSegmentHead;
    seg_n_ = 0;
    return true;
}

bool Writer::close_segment() {
    if (!flush_all()) return false; // the head holds the batches' tags
    const uint32_t slot = seg_head_;
    seg_head_ = kNone;
    if (seg_n_ == 0) { // nothing was added: the slot goes back unused
        free_heads_.push_back(slot);
        return true;
    }
    const uint64_t sum = seal_segment(head_buf(slot), seq_, seg_cursor_, seg_n_,
                                      sealing_ ? sealing_->crypt.get() : nullptr);
    if (encrypted() && sum == 0) {
        free_heads_.push_back(slot);
        return fail(EIO, "encrypt segment %" PRIu64, seq_);
    }
    segments_hash_ = chain_segment(segments_hash_, sum);
    n_records_ += seg_n_;
    seq_++;
    front_ = seg_off_ + seg_cursor_;
    // The head sits before this segment's data in the file: its own request.
    if (!io_->flush() || !io_->add_piece(seg_off_, head_buf(slot), kSegmentHead, kNone)) {
        free_heads_.push_back(slot);
        return false;
    }
    io_->filling()->extra = slot;
    return io_->flush();
}

bool Writer::finish() {
    if (seg_head_ != kNone && !close_segment()) return false;
    kv_snap_trailer t;
    const uint64_t file_len = front_ + kAlign;
    if (!build_trailer(&t, seq_, n_records_, res_.bytes, file_len, segments_hash_, header_checksum_,
                       sealing_ ? sealing_->crypt.get() : nullptr))
        return fail(EIO, "encrypt the trailer");
    memset(trailer_page(), 0, kAlign);
    memcpy(trailer_page(), &t, sizeof t);
    if (!ensure_alloc(file_len) || !io_->add_piece(front_, trailer_page(), kAlign, kNone) ||
        !io_->flush())
        return false;
    while (io_->in_flight())
        if (!io_->reap(true)) return false;
    if (failed()) return false;
    res_.file_bytes = file_len;
    // Requests never overlap, so this proves every byte of the file was
    // written by this persist (what makes writing over a spare safe).
    if (done_bytes_ != file_len)
        return fail(EIO, "wrote %" PRIu64 " bytes of a %" PRIu64 "-byte file (internal error)",
                    done_bytes_, file_len);
    // Preallocation may have gone past the end (or a failed one left i_size there).
    struct stat sb{};
    if (fstat(fd_, &sb) == 0 && uint64_t(sb.st_size) != file_len &&
        ftruncate(fd_, off_t(file_len)) != 0)
        return fail(errno, "truncate %s to %" PRIu64 " bytes", tmp_.c_str(), file_len);
    if (fdatasync(fd_) != 0) return fail(errno, "fdatasync %s", tmp_.c_str());
    int fd = fd_;
    fd_ = -1;
    if (close(fd) != 0) return fail(errno, "close %s", tmp_.c_str());
    // Swap the new file in. RENAME_EXCHANGE keeps the old snapshot, now at
    // PATH.tmp, for the spare; where there is none (or the filesystem cannot
    // exchange) a plain rename replaces it.
    bool exchanged = false;
    if (opts_.recycle_spare) {
        if (renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, path_.c_str(), RENAME_EXCHANGE) == 0)
            exchanged = true;
        else if (errno != ENOENT && errno != EINVAL && errno != ENOSYS)
            return fail(errno, "exchange %s with it", tmp_.c_str());
    }
    if (!exchanged && rename(tmp_.c_str(), path_.c_str()) != 0)
        return fail(errno, "rename %s over it", tmp_.c_str());
    renamed_ = true;
    if (exchanged && rename(tmp_.c_str(), spare_.c_str()) != 0)
        unlink(tmp_.c_str()); // the old snapshot, superseded: only the next persist is slower
    // The rename is durable once the directory is.
    const size_t slash = path_.rfind('/');
    const std::string dir = slash == std::string::npos ? "."
                            : slash == 0               ? "/"
                                                       : path_.substr(0, slash);
    int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return fail(errno, "open directory %s", dir.c_str());
    int rc = fsync(dfd);
    int e = errno;
    close(dfd);
    if (rc != 0) return fail(e, "fsync directory %s", dir.c_str());
    return true;
}

uint32_t Writer::acquire_pin() {
    while (free_pins_.empty())
        if (!batch_.empty()           ? !flush_batch()
            : !sealing_batch_.empty() ? !drain_sealing()
                                      : !io_->wait_some())
            return kNone;
    uint32_t pin = free_pins_.back();
    free_pins_.pop_back();
    pins_[pin].used = true;
    pins_[pin].pieces = 0;
    pins_[pin].stage = UINT64_MAX;
    return pin;
}

void Writer::drop_piece(uint32_t pin) {
    PinSlot &ps = pins_[pin];
    if (--ps.pieces != 0) return;
    if (ps.stage != UINT64_MAX)
        ring_.done(ps.stage); // its ciphertext is on disk (or never will be)
    ps.stage = UINT64_MAX;
    kv_release(pool_, &ps.view);
    ps.used = false;
    free_pins_.push_back(pin);
}

bool Writer::io_error(IoStep step, int code) {
    switch (step) {
    case IoStep::submit:
        return fail(code, "io_uring submit");
    case IoStep::wait:
        return fail(code, "io_uring wait");
    case IoStep::no_entry:
        return fail(code, "no free io_uring entry");
    case IoStep::idle:
        break;
    }
    return fail(code, "internal error: waiting with no I/O in flight");
}

void Writer::io_done(uint32_t, IoReq &r, int res) {
    if (res >= 0 && uint64_t(res) < r.len && !failed()) {
        // A short write (the disk filling up, a signal): finish it in place;
        // what remains of an O_DIRECT write is still aligned, or the kernel
        // says why not.
        uint64_t done = uint64_t(res);
        while (done < r.len) {
            std::vector<iovec> rest;
            uint64_t skip = done;
            for (const iovec &v : r.iov) {
                if (skip >= v.iov_len) {
                    skip -= v.iov_len;
                    continue;
                }
                rest.push_back({static_cast<uint8_t *>(v.iov_base) + skip, v.iov_len - skip});
                skip = 0;
            }
            ssize_t w = pwritev(fd_, rest.data(), int(rest.size()), off_t(r.off + done));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                res = w < 0 ? -errno : -ENOSPC;
                break;
            }
            done += uint64_t(w);
        }
        if (done == r.len) res = int(r.len);
    }
    if (res < 0)
        fail(-res, "write of %" PRIu64 " bytes at offset %" PRIu64, r.len, r.off);
    else
        done_bytes_ += r.len;
    for (uint32_t pin : r.tags)
        drop_piece(pin);
    if (r.extra != kNone) free_heads_.push_back(r.extra);
    if (opts_.progress && done_bytes_ >= next_progress_ && !failed()) {
        next_progress_ = done_bytes_ + kProgressStep;
        opts_.progress(done_bytes_, std::max(total_est_, done_bytes_));
    }
}

bool Writer::ensure_alloc(uint64_t end) {
    if (!prealloc_ || end <= alloc_end_) return true;
    const uint64_t target = std::max(end, alloc_end_ + kPreallocStep);
    const uint64_t new_end = align_up(target, 1ULL << 20);
    if (fallocate(fd_, 0, off_t(alloc_end_), off_t(new_end - alloc_end_)) == 0) {
        alloc_end_ = new_end;
        return true;
    }
    // Not supported, or not that much room: write without it; a disk that
    // is really full fails the write that does not fit.
    if (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL || errno == ENOSPC ||
        errno == EDQUOT) {
        prealloc_ = false;
        return true;
    }
    return fail(errno, "preallocate %" PRIu64 " bytes at offset %" PRIu64, new_end - alloc_end_,
                alloc_end_);
}

void Writer::cleanup() {
    // Nothing may be released or freed while the kernel or the team still
    // uses it.
    if (team_) team_->wait();
    if (io_) io_->drain();
    for (PinSlot &ps : pins_) {
        if (!ps.used) continue;
        kv_release(pool_, &ps.view);
        ps.used = false;
    }
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    if (created_ && !renamed_) unlink(tmp_.c_str());
}

Writer::~Writer() {
    if (!done_) cleanup();
}

std::expected<Result, Error> Writer::run() {
    bool ok = setup() && write_header() && scan() && finish();
    if (!ok && !failed()) fail(EIO, "internal error");
    if (!ok) {
        cleanup();
        done_ = true;
        return std::unexpected(*err_);
    }
    done_ = true;
    res_.seconds = seconds_since(t0_);
    if (opts_.progress) opts_.progress(done_bytes_, done_bytes_);
    return res_;
}

} // namespace

std::expected<Result, Error> persist(kv_pool *pool, const std::string &pool_name,
                                     const std::string &path, const Options &opts) {
    try {
        Writer w(pool, pool_name, path, opts);
        return w.run();
    } catch (const std::bad_alloc &) {
        return std::unexpected(Error{-ENOMEM, "persist " + path + ": out of memory"});
    } catch (...) {
        return std::unexpected(Error{-EIO, "persist " + path + ": unexpected exception"});
    }
}

} // namespace kv::daemon::snapshot
