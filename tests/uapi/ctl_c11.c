/* SPDX-License-Identifier: MIT */
/* control.h and snapshot.h first: they cannot lean on anything included before them. */
#include <kvpool/control.h>
#include <kvpool/snapshot.h>

#include "region_checks.h"
#include "ctl_checks.h"

_Static_assert(__STDC_VERSION__ == 201112L, "compiled as C11");

int main(void)
{
	return kv_test_region_checks() + kv_test_ctl_snapshot_checks();
}
