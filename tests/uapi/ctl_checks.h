/* SPDX-License-Identifier: MIT */
/*
 * Run-time twin of control.h's and snapshot.h's static asserts, shared by the
 * C11 and C++20 programs. Include after <kvpool/control.h> and
 * <kvpool/snapshot.h>, and after region_checks.h (for kv_test_check).
 */
#ifndef KV_TEST_CTL_CHECKS_H
#define KV_TEST_CTL_CHECKS_H

static int kv_test_ctl_snapshot_checks(void)
{
	KV_TEST_SIZE(struct kv_ctl_hdr, KV_CTL_HDR_SIZE_V1);
	KV_TEST_SIZE(struct kv_ctl_request, KV_CTL_REQUEST_SIZE_V1);
	KV_TEST_SIZE(struct kv_ctl_response, KV_CTL_RESPONSE_SIZE_V1);
	KV_TEST_OFFSET(struct kv_ctl_request, size, 64);
	KV_TEST_OFFSET(struct kv_ctl_request, path, 96);
	KV_TEST_OFFSET(struct kv_ctl_request, evict_policy, 352);
	KV_TEST_OFFSET(struct kv_ctl_request, max_entries, 356);
	KV_TEST_OFFSET(struct kv_ctl_request, cursor, 360);
	KV_TEST_OFFSET(struct kv_ctl_request, reserved, 368);
	KV_TEST_SIZE(struct kv_snap_header, KV_SNAP_HEADER_SIZE_V3);
	KV_TEST_OFFSET(struct kv_snap_header, evict_policy, KV_SNAP_HEADER_SIZE_V1);
	KV_TEST_OFFSET(struct kv_snap_header, data_key, KV_SNAP_HEADER_SIZE_V2);
	KV_TEST_OFFSET(struct kv_snap_header, ns_tag, KV_SNAP_HEADER_SIZE_V2 + KV_WRAPPED_KEY_SIZE_V1);
	KV_TEST_OFFSET(struct kv_snap_segment, tag, 40);
	KV_TEST_OFFSET(struct kv_snap_trailer, tag, 64);
	KV_TEST_SIZE(struct kv_snap_history, KV_SNAP_HISTORY_SIZE_V1);
	KV_TEST_OFFSET(struct kv_snap_history, ttl_ms, 32);
	KV_TEST_OFFSET(struct kv_snap_history, reserved, 40);
	KV_TEST_SIZE(struct kv_snap_namespace, KV_SNAP_NAMESPACE_SIZE_V1);
	KV_TEST_SIZE(struct kv_snap_segment, KV_SNAP_SEGMENT_SIZE_V1);
	KV_TEST_SIZE(struct kv_snap_record, KV_SNAP_RECORD_SIZE_V1);
	KV_TEST_SIZE(struct kv_snap_trailer, KV_SNAP_TRAILER_SIZE_V1);
	KV_TEST_OFFSET(struct kv_snap_header, pool_name, 112);
	KV_TEST_OFFSET(struct kv_snap_record, data_off, 40);
	KV_TEST_OFFSET(struct kv_snap_trailer, segments_hash, 48);
	return kv_test_failures;
}

#endif
