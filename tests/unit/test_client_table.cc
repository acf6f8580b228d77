// SPDX-License-Identifier: MIT
//
// The client table when it is full: an attacher takes over the slot of a
// dead client (reaping it first) instead of failing, and the daemon slot
// (KV_CREATE_F_DAEMON_SLOT) is left to KV_ATTACH_F_DAEMON attachers.
#include "pool_fixture.h"

#include <gtest/gtest.h>
#include <kv/kv.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace kvtest {
namespace {

class ClientTableTest : public PoolTest {
  protected:
    void customize(kv_create_opts &o) override {
        o.max_clients = 5;
        o.pins_per_client = 256;
    }

    void TearDown() override {
        for (pid_t c : kids_) {
            kill(c, SIGKILL);
            waitpid(c, nullptr, 0);
        }
        PoolTest::TearDown();
    }

    // A child that attaches, reserves a block, and then either stays
    // attached (alive, until TearDown) or is SIGKILLed holding it all.
    ::testing::AssertionResult spawn_client(bool die) {
        int ready[2];
        if (pipe(ready) != 0) return ::testing::AssertionFailure() << "pipe";
        const pid_t pid = fork();
        if (pid < 0) return ::testing::AssertionFailure() << "fork";
        if (pid == 0) {
            close(ready[0]);
            kv_pool *p = nullptr;
            // NO_REAP: the clients killed before stay unreaped.
            if (kv_pool_attach(path_.c_str(), KV_ATTACH_F_NO_REAP, &p, nullptr, 0) != 0) _exit(3);
            kv_reservation r{};
            const kv_key k = key_of(1000 + uint64_t(getpid()));
            if (kv_reserve(p, ns_, &k, 64 * KiB, nullptr, &r) != 0) _exit(4);
            if (write(ready[1], "r", 1) != 1) _exit(5);
            if (die) raise(SIGKILL);
            pause();
            _exit(0);
        }
        close(ready[1]);
        char c = 0;
        const bool ok = read(ready[0], &c, 1) == 1;
        close(ready[0]);
        if (die) {
            waitpid(pid, nullptr, 0);
        } else {
            kids_.push_back(pid);
        }
        return ok ? ::testing::AssertionSuccess()
                  : ::testing::AssertionFailure() << "child failed to attach";
    }

    int try_attach(uint32_t flags, kv_pool **out, std::string *msg) {
        char err[256] = "";
        const int rc = kv_pool_attach(path_.c_str(), flags, out, err, sizeof err);
        *msg = err;
        return rc;
    }

    std::vector<pid_t> kids_;
};

// Four clients killed holding reservations fill the table (the fixture's
// own attachment is the fifth). The next attacher takes a dead slot over.
TEST_F(ClientTableTest, AttachTakesOverADeadClientsSlot) {
    for (int i = 0; i < 4; i++)
        ASSERT_TRUE(spawn_client(true));
    EXPECT_EQ(usage().entries_reserved, 4u);
    kv_pool *p = nullptr;
    std::string msg;
    ASSERT_EQ(try_attach(KV_ATTACH_F_NO_REAP, &p, &msg), 0) << msg;
    // It reaped the slot it took (and only that one: NO_REAP).
    EXPECT_EQ(usage().entries_reserved, 3u);
    ASSERT_EQ(kv_reap(pool_), 3);
    EXPECT_EQ(usage().entries_reserved, 0u);
    EXPECT_EQ(stats().reaps, 4u);
    EXPECT_EQ(kv_pool_detach(p), 0);
    expect_consistent();
}

// Every slot held by a live client: -EUSERS with a message that says so.
TEST_F(ClientTableTest, FullTableOfLiveClientsIsRefused) {
    for (int i = 0; i < 4; i++)
        ASSERT_TRUE(spawn_client(false));
    kv_pool *p = nullptr;
    std::string msg;
    EXPECT_EQ(try_attach(0, &p, &msg), -EUSERS);
    EXPECT_TRUE(mentions_any(msg, {"client table full"})) << msg;
    EXPECT_EQ(try_attach(1U << 7, &p, &msg), -EINVAL) << "unknown attach flags are refused";
}

// Garbage in the pin journal of a FREE client slot (a scribbled region)
// made every get of the next client to take that slot fail with -ENOBUFS.
TEST_F(ClientTableTest, GarbageInAFreeSlotsJournalIsReset) {
    ASSERT_EQ(put(1, payload(4096, 1)), 0);
    const kv_region_header *h = kv_pool_header(pool_);
    auto *base = const_cast<uint8_t *>(reinterpret_cast<const uint8_t *>(h));
    auto *journal = reinterpret_cast<kv_pin_slot *>(base + h->journal_off);
    const uint32_t mine = kv_pool_client_index(pool_);
    for (uint32_t c = 0; c < h->max_clients; c++) {
        if (c == mine) continue;
        for (uint32_t s = 0; s < h->pins_per_client; s++) {
            kv_pin_slot &js = journal[uint64_t(c) * h->pins_per_client + s];
            js.a = 0xdeadbeefcafef00dULL ^ s;
            js.b = (uint64_t(7) << 32) | (s % 2 ? KV_PIN_HELD : 0x55); // garbage phases, seq 7
        }
    }
    kv_pool *p = attach_another();
    ASSERT_NE(p, nullptr);
    const kv_key k = key_of(1);
    std::vector<kv_view> views(h->pins_per_client);
    for (kv_view &v : views)
        ASSERT_EQ(kv_get(p, ns_, &k, &v), 0) << "a journal slot left unusable";
    for (kv_view &v : views)
        ASSERT_EQ(kv_release(p, &v), 0);
    // Nothing was unpinned on the garbage's word: the entry's pins balance.
    expect_consistent();
    const uint32_t c = kv_pool_client_index(p);
    for (uint32_t s = 0; s < h->pins_per_client; s++)
        EXPECT_GE(journal[uint64_t(c) * h->pins_per_client + s].b >> 32, 7u) << "seq went back";
}

class DaemonSlotTest : public ClientTableTest {
  protected:
    void customize(kv_create_opts &o) override {
        o.max_clients = 4;
        o.flags |= KV_CREATE_F_DAEMON_SLOT;
    }
};

TEST_F(DaemonSlotTest, OnlyTheDaemonTakesTheLastSlot) {
    const kv_region_header *h = kv_pool_header(pool_);
    ASSERT_EQ(h->max_clients, 5u);
    ASSERT_EQ(h->daemon_slots, 1u);
    for (int i = 0; i < 3; i++)
        ASSERT_TRUE(spawn_client(false));
    kv_pool *p = nullptr;
    std::string msg;
    EXPECT_EQ(try_attach(0, &p, &msg), -EUSERS);
    EXPECT_TRUE(mentions_any(msg, {"kept for the daemon"})) << msg;
    ASSERT_EQ(try_attach(KV_ATTACH_F_DAEMON, &p, &msg), 0) << msg;
    EXPECT_EQ(kv_pool_client_index(p), 4u);
    kv_pool *second = nullptr;
    EXPECT_EQ(try_attach(KV_ATTACH_F_DAEMON, &second, &msg), -EUSERS);
    EXPECT_EQ(kv_pool_detach(p), 0);
}

// A daemon killed in its slot: the next daemon takes the slot over.
TEST_F(DaemonSlotTest, ANewDaemonTakesOverADeadDaemonsSlot) {
    for (int i = 0; i < 3; i++)
        ASSERT_TRUE(spawn_client(false));
    const pid_t d = fork();
    ASSERT_GE(d, 0);
    if (d == 0) {
        kv_pool *p = nullptr;
        if (kv_pool_attach(path_.c_str(), KV_ATTACH_F_DAEMON, &p, nullptr, 0) != 0) _exit(3);
        raise(SIGKILL);
    }
    int st = 0;
    ASSERT_EQ(waitpid(d, &st, 0), d);
    ASSERT_TRUE(WIFSIGNALED(st)) << "the first daemon did not attach: " << st;
    kv_pool *p = nullptr;
    std::string msg;
    ASSERT_EQ(try_attach(KV_ATTACH_F_DAEMON, &p, &msg), 0) << msg;
    EXPECT_EQ(kv_pool_client_index(p), 4u);
    EXPECT_EQ(kv_pool_detach(p), 0);
}

} // namespace
} // namespace kvtest
