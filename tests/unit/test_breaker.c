/*
 * The router's circuit breaker (router/breaker.c): opening after the
 * threshold, the half-open probe, backing off, closing again, and the
 * pointers transfers in flight hold staying valid as endpoints are added.
 */
#include <criterion/criterion.h>
#include <stdio.h>

#include "breaker.h"

static struct rt_breakers t;

static void
setup(void)
{
	t = (struct rt_breakers) {
	    .threshold = 3, .min_ms = 1000, .max_ms = 4000};
}

static void
teardown(void)
{
	rt_breakers_fini(&t);
}

TestSuite(breaker, .init = setup, .fini = teardown);

Test(breaker, opens_after_threshold_then_one_probe)
{
	struct rt_breaker *b = rt_breaker_get(&t, "https://spine/a");

	cr_assert_not_null(b);
	for (int i = 0; i < 2; i++) {
		cr_assert(rt_breaker_allow(b, 0));
		rt_breaker_result(&t, b, false, 0);
	}
	cr_assert(rt_breaker_allow(b, 0), "open before the threshold");
	rt_breaker_result(&t, b, false, 0);
	cr_assert_not(rt_breaker_allow(b, 10), "not open at the threshold");
	cr_assert(rt_breakers_blocked(&t, 10));
	/* After the cool-down one probe goes, and only one. */
	cr_assert(rt_breaker_allow(b, 1000));
	cr_assert_not(rt_breaker_allow(b, 1000));
	/* The probe failed: open again, for longer. */
	rt_breaker_result(&t, b, false, 1000);
	cr_assert_not(rt_breaker_allow(b, 2500));
	cr_assert(rt_breaker_allow(b, 3000));
	/* The probe reached Spine: closed. */
	rt_breaker_result(&t, b, true, 3000);
	cr_assert(rt_breaker_allow(b, 3000));
	cr_assert(rt_breaker_allow(b, 3000));
	cr_assert_not(rt_breakers_blocked(&t, 3000));
}

Test(breaker, one_endpoint_open_does_not_block_the_others)
{
	struct rt_breaker *a = rt_breaker_get(&t, "https://spine/a");

	rt_breaker_get(&t, "https://spine/b");
	for (int i = 0; i < 3; i++)
		rt_breaker_result(&t, a, false, 0);
	cr_assert_not(rt_breaker_allow(a, 0));
	cr_assert_not(rt_breakers_blocked(&t, 0));
	cr_assert_eq(rt_breaker_get(&t, "https://spine/a"), a);
}

/*
 * Regression (found in review, fixed): breakers lived in one array grown
 * by realloc, so adding an endpoint while a transfer held its breaker's
 * address left that pointer dangling (and the transfer's result was
 * written into freed memory). ASan reports the old layout here.
 */
Test(breaker, pointers_stay_valid_as_endpoints_are_added)
{
	struct rt_breaker *first = rt_breaker_get(&t, "https://spine/0");
	char url[64];

	for (int i = 1; i < 200; i++) {
		snprintf(url, sizeof(url), "https://spine/%d", i);
		cr_assert_not_null(rt_breaker_get(&t, url));
	}
	for (int i = 0; i < 3; i++)
		rt_breaker_result(&t, first, false, 0);
	cr_assert_eq(rt_breaker_get(&t, "https://spine/0"), first);
	cr_assert_not(rt_breaker_allow(first, 0));
}
