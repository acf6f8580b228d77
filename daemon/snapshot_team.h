// SPDX-License-Identifier: MIT
//
// A team of helper threads for the snapshot engine's cryptography:
// start(n, fn) hands fn(worker, i) for every i in [0, n) to the helpers and
// returns at once; wait() returns once every call returned. Sealing or
// opening the blocks of a snapshot is independent per block and CPU-bound
// (a core of AES-256-GCM can be slower than the disk), so a persist or
// restore has one batch of blocks sealed or opened on every core while its
// own thread goes on pinning, reserving, submitting and reaping io_uring
// requests: the cipher's work hides behind the I/O instead of adding to it.
//
// worker is 1..size()-1 for the helpers (0 only with no helpers, when start
// runs the calls inline): an index for per-worker state (a crypto::Aead
// each: one cipher context per thread). fn must not throw. One thread (the
// engine's) calls start and wait, and waits before the next start;
// helpers sleep on a condition variable between batches.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kv::daemon::snapshot {

class Team {
  public:
    // helpers: threads besides the caller (0: run calls fn inline).
    explicit Team(unsigned helpers) {
        for (unsigned w = 1; w <= helpers; w++)
            threads_.emplace_back([this, w] { loop(w); });
    }
    ~Team() {
        {
            std::lock_guard lk(m_);
            stop_ = true;
        }
        wake_.notify_all();
        for (std::thread &t : threads_)
            t.join();
    }
    Team(const Team &) = delete;
    Team &operator=(const Team &) = delete;

    unsigned size() const { return unsigned(threads_.size()) + 1; }

    // Helpers for a caller that hands work off (start) and goes on with its
    // I/O: one per core, at most max_helpers.
    static unsigned helpers_for_async(unsigned max_helpers) {
        const unsigned cores = std::max(1U, std::thread::hardware_concurrency());
        return std::min(cores, max_helpers);
    }

    // Hand fn(w, i) for every i in [0, n) to the helpers alone and return at
    // once (with no helpers, run them inline first). The caller must wait()
    // before the next start or run, and before it touches what fn writes.
    void start(size_t n, std::function<void(unsigned, size_t)> fn) {
        if (n == 0) return;
        if (threads_.empty()) {
            for (size_t i = 0; i < n; i++)
                fn(0, i);
            return;
        }
        {
            std::lock_guard lk(m_);
            owned_fn_ = std::move(fn);
            fn_ = &owned_fn_;
            n_ = n;
            next_ = 0;
            busy_ = 0;
            gen_++;
        }
        wake_.notify_all();
    }
    // Whether the calls of the last start are all done (wait would not block).
    bool idle() {
        std::lock_guard lk(m_);
        return next_ >= n_ && busy_ == 0;
    }
    // Until the calls of the last start have all returned. The mutex makes
    // what they wrote visible to the caller.
    void wait() {
        std::unique_lock lk(m_);
        done_.wait(lk, [this] { return next_ >= n_ && busy_ == 0; });
        fn_ = nullptr;
    }

  private:
    // Take indexes until none is left. Called with m_ not held.
    void work(unsigned w) {
        std::unique_lock lk(m_);
        while (next_ < n_) {
            const size_t i = next_++;
            const auto *fn = fn_;
            busy_++;
            lk.unlock();
            (*fn)(w, i);
            lk.lock();
            if (--busy_ == 0 && next_ >= n_) done_.notify_all();
        }
    }

    void loop(unsigned w) {
        uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock lk(m_);
                wake_.wait(lk, [&] { return stop_ || gen_ != seen; });
                if (stop_) return;
                seen = gen_;
            }
            work(w);
        }
    }

    std::mutex m_;
    std::condition_variable wake_, done_;
    const std::function<void(unsigned, size_t)> *fn_ = nullptr;
    std::function<void(unsigned, size_t)> owned_fn_; // start's copy
    size_t n_ = 0, next_ = 0, busy_ = 0;
    uint64_t gen_ = 0;
    bool stop_ = false;
    std::vector<std::thread> threads_;
};

} // namespace kv::daemon::snapshot
