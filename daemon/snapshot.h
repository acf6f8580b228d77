// SPDX-License-Identifier: MIT
//
// The snapshot engine: persist a live pool to a file in the format of
// <kvpool/snapshot.h>, and restore such a file into a pool, with io_uring
// and O_DIRECT straight between the region and the disk (no copy of block
// data, except the last partial page of a block whose length is not a
// multiple of 4 KiB).
//
// persist(pool, name, path)
//   Works on a live pool: other processes keep putting, getting and
//   removing. Each committed block is pinned while it is written, so nothing
//   is torn, and a block committed when the snapshot starts is either in the
//   file or was removed meanwhile (counted in skipped). At most
//   min(pins_per_client / 2, 1024) pins of this client are held at once.
//   Namespaces registered after the snapshot started are skipped too, and
//   so is a key met a second time (removed and put again into a row the
//   scan had yet to reach): each key is in the file once.
//   With Options::keyring the file is encrypted: each block is sealed
//   (AES-256-GCM) from the region into a staging buffer of the writer's
//   and written from there; the index and the header's namespaces are
//   sealed too (<kvpool/snapshot.h>, format 1.2).
//   The file is written to path + ".tmp", preallocated, fdatasync'ed,
//   renamed over path and the directory fsync'ed: the previous snapshot at
//   path stays whole until the new one is. On any error (ENOSPC, EIO, an
//   injected fault, cancel) every pin is released, the .tmp is unlinked,
//   path is untouched, and Error names the file, the step and the errno
//   text ("persist /x/y.kvsnap: write of 4194304 bytes at offset 8192: No
//   space left on device"). The pool is only ever read.
//
// restore(pool, path)
//   Into a fresh (or any) pool. A damaged header refuses the whole file
//   (Error, EBADMSG/EPROTO, saying what was seen and what was expected).
//   Segments are then taken in order until the file is cut off (truncated
//   = true; the records of the last segment whose data lies whole in the
//   file are still restored). A segment head that fails its checks loses
//   that segment only (truncated, damaged_segments): the reader goes on at
//   the next page that starts a valid head of a later segment. Every block
//   is checked against its XXH3-64 before it is committed, and a block
//   that fails is aborted (dropped).
//   Counts: blocks/bytes committed; dropped: failed checksum, unreadable
//   (I/O error on its data), namespace refused by the pool, longer than the
//   pool's slab size, or left out because the pool filled up (the first
//   eviction this client causes, or -ENOSPC, ends the adding: a restore
//   never evicts what it restored); skipped: the key was already present
//   (or being written by another client). A missing trailer sets
//   truncated; one that is there but does not match what was read (its
//   checksum, counts, chained hashes, file_len) sets trailer_damaged
//   instead, with trailer_problem saying what: every block was read, but
//   the file cannot prove that none is missing. Bytes after the trailer
//   (appended garbage, a hole) are not read: trailing_bytes counts them.
//   I/O errors: on a block's data the block is dropped and the restore
//   goes on; on the header, a segment head or the trailer the restore
//   stops with Error (what was committed stays: each block was verified).
//   Cancel: Error ECANCELED, committed blocks stay.
//   An encrypted file (format 1.2): each block's data is read into its
//   reservation as ciphertext and decrypted there; only a block whose tag
//   matches (and whose checksum then verifies) is committed, any other is
//   aborted and counted in corrupt. A segment head whose tag does not
//   match is a damaged head (damaged_segments); a trailer whose tag does
//   not match is a damaged trailer. The key errors are under Options::keyring.
//   A file of format 1.1 gives every block the eviction history it had in
//   the source (commit time, rank re-based on this host's clock, time to
//   live, CLOCK bit; see kv_snap_history) and, once every block is in,
//   re-links chain children to their parents by key, so the first
//   evictions pick what the source would have picked. A block whose time
//   to live ran out since the persist is not restored (expired). A 1.0
//   file restores every block as if just put.
//
// inspect(path): validates and returns the header alone (buffered reads).
//
// Concurrency: each call is self-contained (its own ring, buffers and fd)
// and single-threaded; several may run at once on different pools or files.
// The kv_pool handle may be shared with other threads. Nothing throws and
// nothing prints: progress goes through Options::progress.
#pragma once

#include <atomic>
#include <cstdint>
#include <expected>
#include <functional>
#include <kv/kv.h>
#include <kv/kv.hpp>
#include <kvpool/snapshot.h>
#include <string>

namespace kv::daemon {
class Keyring;
}

namespace kv::daemon::snapshot {

struct Options {
    unsigned queue_depth = 32; // io_uring requests in flight (1..4096)
    uint64_t max_request_bytes = 4
                                 << 20; // cap on one request; adjacent extents are merged up to it
    // Register the pool's data section as fixed buffers, when it is at most
    // 4x the data to move (registering pins every page of it) and, for a
    // restore, the pool was prefaulted (else registering would first
    // allocate and zero every page, serially). Falls back to plain I/O when
    // the kernel refuses (e.g. RLIMIT_MEMLOCK without CAP_IPC_LOCK);
    // Result::fixed_buffers says which was used.
    bool register_buffers = true;
    // Keep the snapshot a persist replaces as PATH.spare and write the next
    // persist over it (PATH.tmp while in progress). Overwriting extents the
    // filesystem has already written is a pure data write: no unwritten
    // extents to convert and journal at fdatasync, no blocks to allocate,
    // and no multi-GiB unlink when the rename replaces the old file (on ext4
    // those cost more than the writes). Costs a second snapshot's disk space.
    bool recycle_spare = true;
    // Fault injection: the Nth io request (1-based) of the run completes with
    // -EIO; 0 = off, then the env KVPOOL_FAULT_IO_NTH is used if set.
    uint64_t fail_nth_io = 0;
    // Called about every 64 MiB of data done and once at the end; total is an
    // estimate for persist (the pool is live) and the file size for restore.
    std::function<void(uint64_t done_bytes, uint64_t total_bytes)> progress;
    std::atomic<bool> *cancel = nullptr; // optional: set to stop with ECANCELED
    // restore: the pool the file must have been written from (the header's
    // pool_name). Empty: any file is taken. Otherwise a file of another pool
    // is refused (EPERM, naming both) unless allow_foreign, and a file that
    // names no pool (an older writer's) unless allow_unnamed; nothing is
    // added to the pool before this check.
    std::string expect_pool;
    bool allow_foreign = false;
    bool allow_unnamed = false;
    // persist: the group of the file (-1: the daemon's). The file is mode
    // 0640 (0600 with no group) whatever the umask or the mode of a
    // recycled spare, so only root and that group can read it.
    int file_gid = -1;
    // The pool's keys ([pool.encryption]), or null. persist: with a keyring
    // the file is encrypted (format 1.2, KV_SNAP_INCOMPAT_ENCRYPTED) under a
    // fresh data key wrapped by the keyring's current key; without, it is
    // written plain. restore: an encrypted file needs the key its header
    // names: none configured (or no keyring) refuses it with ENOKEY, a key
    // of that id that does not unwrap its data key with EKEYREJECTED, and a
    // header that does not authenticate with EBADMSG; each message names
    // the pool, the file and the key id. Must outlive the call.
    const Keyring *keyring = nullptr;
};

struct Result {
    uint64_t blocks = 0;     // blocks written / committed
    uint64_t bytes = 0;      // their data bytes
    uint64_t file_bytes = 0; // persist: file size; restore: bytes of the file taken in
    uint64_t dropped = 0;    // restore: not restored (see above)
    uint64_t corrupt = 0;    // restore: of dropped, those whose copy in the file failed its
                             // checksum or could not be read
    uint64_t no_room = 0;    // restore: of dropped, those left out because the pool was full
    uint64_t evicted = 0;    // restore: blocks evicted from the pool by this client meanwhile
    uint64_t expired = 0;    // restore: not restored, their time to live ran out since the persist
    uint64_t skipped =
        0; // persist: removed or unpinnable during the run; restore: key already present
    double seconds = 0;
    bool truncated =
        false; // restore: file ended early / damaged segment: the verified part was restored
    bool trailer_damaged = false;  // restore: every segment read; the trailer does not match
    std::string trailer_problem;   // restore: what about the trailer (with trailer_damaged)
    uint64_t trailing_bytes = 0;   // restore: bytes after the trailer, not part of the snapshot
    uint64_t damaged_segments = 0; // restore: segments lost to a damaged head (at least 1 if the
                                   // file holds no valid head after it)
    bool fixed_buffers = false;    // the data section was registered (false: plain reads/writes)
    bool recycled = false; // persist: written over PATH.spare's blocks (Options::recycle_spare)
    std::string key_id;    // the pool key the file is encrypted with; "" for a plain file
};

// kv::Error (<kv/kv.hpp>): code is -errno, as the C API returns it; message
// names the file, what was seen and what was expected.
using Error = kv::Error;

std::expected<Result, Error> persist(kv_pool *pool, const std::string &pool_name,
                                     const std::string &path, const Options &opts);
std::expected<Result, Error> restore(kv_pool *pool, const std::string &path, const Options &opts);
std::expected<kv_snap_header, Error> inspect(const std::string &path);

} // namespace kv::daemon::snapshot
