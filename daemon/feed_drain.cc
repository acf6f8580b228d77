// SPDX-License-Identifier: MIT
//
// See feed_drain.h. A pool's reader is keyed by the pool's name and its
// kv_pool handle: a pool destroyed and created again under the same name
// gets a new reader, whose first poll resyncs.
#include "feed_drain.h"

#include "../libkv/feed.h"
#include "pool_manager.h"

#include <algorithm>

namespace kv::daemon {

struct FeedDrainer::PoolFeed {
    kv_pool *handle = nullptr;
    std::unique_ptr<kv::detail::FeedReader> reader;
    std::vector<kv::detail::FeedItem> items;
    std::vector<FeedEvent> events;
    FeedCounters c;
    uint64_t lost_grace_seen = 0;
};

namespace {

using kv::detail::FeedItem;

FeedEvent translate(FeedItem &it) {
    FeedEvent ev;
    ev.ticket = it.ticket;
    ev.ns = it.ns;
    ev.key = it.key;
    ev.has_parent = it.has_parent;
    ev.parent = it.parent;
    ev.length = it.length;
    ev.tokens = it.tokens;
    ev.time_ns = it.time_ns;
    ev.entry = it.entry;
    ev.gen = it.gen;
    switch (it.op) {
    case FeedItem::Op::Commit:
        ev.kind = FeedKind::Stored;
        ev.cause = FeedCause::Commit;
        ev.token_ids = std::move(it.token_ids);
        break;
    case FeedItem::Op::Resync:
        ev.kind = FeedKind::Stored;
        ev.cause = FeedCause::Resync;
        break;
    case FeedItem::Op::Cleared:
        ev.kind = FeedKind::Cleared;
        ev.cause = FeedCause::Resync;
        ev.entry = KV_NIL32;
        break;
    case FeedItem::Op::Remove:
        ev.kind = FeedKind::Removed;
        ev.cause = FeedCause::Remove;
        break;
    case FeedItem::Op::Evict:
        ev.kind = FeedKind::Removed;
        ev.cause = FeedCause::Evict;
        break;
    case FeedItem::Op::Expire:
        ev.kind = FeedKind::Removed;
        ev.cause = FeedCause::Expire;
        break;
    }
    return ev;
}

} // namespace

FeedDrainer::FeedDrainer() = default;
FeedDrainer::~FeedDrainer() = default;

void FeedDrainer::add_sink(FeedSink *sink) {
    if (!sink || std::find(sinks_.begin(), sinks_.end(), sink) != sinks_.end()) return;
    sinks_.push_back(sink);
    // The new sink knows nothing yet: every pool starts again from a resync.
    for (auto &[name, pf] : pools_)
        pf->reader->request_resync();
}

void FeedDrainer::remove_sink(FeedSink *sink) {
    std::erase(sinks_, sink);
}

size_t FeedDrainer::poll_all(PoolManager &pm) {
    if (sinks_.empty()) return 0;
    size_t total = 0;
    std::vector<std::string> names;
    for (const auto &pool : pm.pools()) {
        if (!pool->handle || !pool->handle->feed_hdr) continue;
        names.push_back(pool->cfg.name);
        total += poll_pool(pool->cfg.name, pool->handle);
    }
    forget_others(names);
    return total;
}

size_t FeedDrainer::poll_pool(const std::string &name, kv_pool *h) {
    if (sinks_.empty() || !h || !h->feed_hdr) return 0;
    auto &pf = pools_[name];
    if (!pf || pf->handle != h) {
        pf = std::make_unique<PoolFeed>();
        pf->handle = h;
        pf->reader = std::make_unique<kv::detail::FeedReader>(h);
    }
    pf->items.clear();
    pf->reader->poll(pf->items, kMaxPerPoll);
    const kv::detail::FeedReaderStats &st = pf->reader->stats();
    if (st.lost_grace != pf->lost_grace_seen) {
        // A ticket stayed unpublished past the grace time: its producer may
        // be dead holding a slot. Reap now (the reaper publishes the slot as
        // a NOP and counts a drop, so the next poll resyncs again).
        pf->lost_grace_seen = st.lost_grace;
        kv_reap(h);
    }
    pf->c.records = st.records;
    pf->c.resyncs = st.resyncs;
    pf->c.lost = st.lost_drops + st.lost_laps + st.lost_grace;
    pf->c.head = pf->reader->head();
    pf->c.lag = pf->c.head >= pf->reader->cursor() ? pf->c.head - pf->reader->cursor() + 1 : 0;
    pf->c.slots = h->hdr->feed_slots;
    if (pf->items.empty()) return 0;
    pf->events.clear();
    pf->events.reserve(pf->items.size());
    for (FeedItem &it : pf->items)
        pf->events.push_back(translate(it));
    pf->c.events += pf->events.size();
    for (FeedSink *s : sinks_)
        s->on_feed(name, h, pf->events);
    return pf->events.size();
}

void FeedDrainer::forget_others(const std::vector<std::string> &names) {
    std::erase_if(pools_, [&](const auto &kv) {
        return std::find(names.begin(), names.end(), kv.first) == names.end();
    });
}

FeedCounters FeedDrainer::counters(const std::string &pool) const {
    auto it = pools_.find(pool);
    return it == pools_.end() ? FeedCounters{} : it->second->c;
}

namespace {
const FeedDrainer *g_current = nullptr;
} // namespace

const FeedDrainer *FeedDrainer::current() {
    return g_current;
}

void FeedDrainer::set_current(const FeedDrainer *d) {
    g_current = d;
}

FeedCounters FeedDrainer::totals() const {
    FeedCounters t;
    for (const auto &[name, pf] : pools_) {
        t.events += pf->c.events;
        t.records += pf->c.records;
        t.resyncs += pf->c.resyncs;
        t.lost += pf->c.lost;
        t.head += pf->c.head;
        t.lag += pf->c.lag;
        t.slots += pf->c.slots;
    }
    return t;
}

} // namespace kv::daemon
