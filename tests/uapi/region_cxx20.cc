// SPDX-License-Identifier: MIT
// region.h is included first, so it cannot lean on anything included before it.
#include <kvpool/region.h>

#include "region_checks.h"

static_assert(__cplusplus == 202002L, "compiled as C++20");

int main()
{
	return kv_test_region_checks();
}
