/* SPDX-License-Identifier: MIT */
/*
 * Sizes of the public structs of <kv/kv.h>, which have no published size
 * constants: both the C11 and the C++20 program check the same numbers, so a
 * layout that differs between the two languages fails one of them.
 * Include after <kv/kv.h>.
 */
#ifndef KV_TEST_KV_CHECKS_H
#define KV_TEST_KV_CHECKS_H

#include "region_checks.h"

static int kv_test_kv_checks(void)
{
	KV_TEST_SIZE(struct kv_key, 16);
	KV_TEST_SIZE(struct kv_create_opts, 72);
	KV_TEST_SIZE(struct kv_put_opts, 56);
	KV_TEST_SIZE(struct kv_meta, 16);
	KV_TEST_SIZE(struct kv_view, 56);
	KV_TEST_SIZE(struct kv_reservation, 32);
	KV_TEST_SIZE(struct kv_stats, 120);
	KV_TEST_SIZE(struct kv_usage, 120);
	KV_TEST_OFFSET(struct kv_create_opts, struct_size, 0);
	KV_TEST_OFFSET(struct kv_create_opts, slab_size, 24);
	KV_TEST_OFFSET(struct kv_create_opts, mode, 52);
	KV_TEST_OFFSET(struct kv_create_opts, evict_policy, 56);
	KV_TEST_OFFSET(struct kv_put_opts, meta, 8);
	KV_TEST_OFFSET(struct kv_put_opts, parent, 24);
	KV_TEST_OFFSET(struct kv_put_opts, ttl_ms, 40);
	KV_TEST_OFFSET(struct kv_put_opts, n_token_ids, 44);
	KV_TEST_OFFSET(struct kv_put_opts, token_ids, 48);
	KV_TEST_OFFSET(struct kv_create_opts, max_entries, 60);
	KV_TEST_OFFSET(struct kv_create_opts, feed_slots, 64);
	KV_TEST_OFFSET(struct kv_view, handle, 40);
	kv_test_check("KV_DEDUP", KV_DEDUP, 1);
	return kv_test_region_checks();
}

#endif /* KV_TEST_KV_CHECKS_H */
