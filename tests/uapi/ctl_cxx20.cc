// SPDX-License-Identifier: MIT
// control.h and snapshot.h first: they cannot lean on anything included before them.
#include <kvpool/control.h>
#include <kvpool/snapshot.h>

#include "region_checks.h"
#include "ctl_checks.h"

static_assert(__cplusplus == 202002L, "compiled as C++20");

int main()
{
	return kv_test_region_checks() + kv_test_ctl_snapshot_checks();
}
