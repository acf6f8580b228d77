// SPDX-License-Identifier: MIT
//
// The index's lock-free lists (libkv/index.cc), driven through its internal
// functions where a multi-process interleaving must be staged step by step.
#include "detail.h"
#include "pool_fixture.h"

namespace {

using namespace kvtest;
using kv::detail::Ctl;
using kv::detail::Link;

class IndexTest : public PoolTest {
  protected:
    // The entry that holds key i, and its ctl word.
    uint32_t entry_of(uint64_t i, uint64_t *ctl) {
        const kv_key k = key_of(i);
        kv::detail::Found f = kv::detail::index_find(pool_, ns_, k);
        EXPECT_TRUE(f.found) << "key " << i;
        *ctl = f.found ? pool_->entries[f.cur].ctl : 0;
        return f.found ? f.cur : KV_NIL32;
    }
};

// I4: a remover or a reaper that saw an entry DEAD in generation g may get
// to index_remove(e, g) only after another process has finished removing
// it, and e may be claimed again by then and linked under a new key (an
// evicting put claims its victim's entry at once). Staged here: remove key
// 1, put key 2 into the same entry (this process's next put takes the entry
// its remove freed), then the late index_remove of the first life. Before
// mark() checked the state, it marked the second life's next word, the
// find after it unlinked that COMMITTED entry, and key 2 was lost for good
// (CrashTest.KillRandomWorkerRoundsEntryTableFull failed CI that way:
// "unreachable=1", a committed entry no list reaches).
TEST_F(IndexTest, LateRemoveLeavesTheEntrysNextLifeAlone) {
    const auto d1 = payload(4 * KiB, 1), d2 = payload(4 * KiB, 2);
    ASSERT_EQ(put(1, d1), 0);
    uint64_t c1 = 0;
    const uint32_t e = entry_of(1, &c1);
    ASSERT_NE(e, KV_NIL32);
    const kv_key k1 = key_of(1);
    ASSERT_EQ(kv_remove(pool_, ns_, &k1), 0);
    ASSERT_EQ(put(2, d2), 0);
    uint64_t c2 = 0;
    ASSERT_EQ(entry_of(2, &c2), e) << "the put did not reuse the removed entry: nothing staged";
    ASSERT_EQ(Ctl::gen(c2), Ctl::gen(c1) + 1);
    ASSERT_EQ(Ctl::state(c2), uint32_t(KV_ENTRY_COMMITTED));

    kv::detail::index_remove(pool_, e, Ctl::gen(c1)); // the late call, for the first life

    EXPECT_FALSE(Link::marked(pool_->entries[e].next)) << "the second life was marked deleted";
    EXPECT_EQ(pool_->entries[e].ctl, c2) << "the second life's state changed";
    EXPECT_EQ(contains(2), 1) << "the second life is no longer reachable";
    kv_view v{};
    ASSERT_EQ(get(2, &v), 0);
    EXPECT_TRUE(view_equals(v, d2));
    EXPECT_EQ(kv_release(pool_, &v), 0);
    kv_usage u{};
    ASSERT_EQ(kv_pool_usage(pool_, &u), 0);
    EXPECT_EQ(u.entries_committed, 1u);
    EXPECT_EQ(u.unreachable, 0u);
    expect_consistent();
}

// The reaper's help: an entry left DEAD, unmarked and linked (its remover
// died between the kill CAS and the mark) is marked, unlinked and freed by
// index_remove at the generation it was seen DEAD in; a second such call,
// now late, changes nothing.
TEST_F(IndexTest, RemoveOfADeadEntryFinishesItOnce) {
    const auto d1 = payload(4 * KiB, 1);
    ASSERT_EQ(put(1, d1), 0);
    uint64_t c1 = 0;
    const uint32_t e = entry_of(1, &c1);
    ASSERT_NE(e, KV_NIL32);
    kv_entry &en = pool_->entries[e];
    const uint32_t g = Ctl::gen(c1);
    // The kill CAS alone (store.cc, entry_kill), as a remover that died next.
    const uint64_t x = en.aux;
    ASSERT_TRUE(kv::detail::cas16(&en.ctl, {c1, x}, {Ctl::make(g, KV_ENTRY_DEAD, 0), x}));
    ASSERT_FALSE(Link::marked(en.next));

    kv::detail::index_remove(pool_, e, g);
    const uint64_t after = en.ctl, next_after = en.next;
    EXPECT_EQ(Ctl::state(after), uint32_t(KV_ENTRY_FREE));
    EXPECT_EQ(Ctl::gen(after), g + 1);
    EXPECT_TRUE(Link::marked(next_after)); // (I4: until the next life's insert)
    EXPECT_EQ(contains(1), 0);
    kv::detail::index_remove(pool_, e, g); // late now
    EXPECT_EQ(en.ctl, after);
    EXPECT_EQ(en.next, next_after);
    expect_consistent();
}

} // namespace
