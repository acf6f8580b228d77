// SPDX-License-Identifier: MIT
// kv.h is included first, so it cannot lean on anything included before it.
#include <kv/kv.h>

#include "kv_checks.h"

static_assert(__cplusplus == 202002L, "compiled as C++20");

int main()
{
	return kv_test_kv_checks();
}
