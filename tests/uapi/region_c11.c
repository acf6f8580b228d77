/* SPDX-License-Identifier: MIT */
/* region.h is included first, so it cannot lean on anything included before it. */
#include <kvpool/region.h>

#include "region_checks.h"

_Static_assert(__STDC_VERSION__ == 201112L, "compiled as C11");

int main(void)
{
	return kv_test_region_checks();
}
