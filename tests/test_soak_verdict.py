"""bench/soak.py's verdict: RSS outside the byte-bounded caches, and throughput or server CPU per response."""

from bench.soak import verdict


def _samples(rates, costs, rss=600.0, growth=0.0):
    samples, responses, cpu = [], 0, 0.0
    for i, (rate, cost) in enumerate(zip(rates, costs, strict=True)):
        responses += int(rate * 10)
        cpu += rate * 10 * cost / 1000
        samples.append({"t": 10.0 * (i + 1), "responses": responses, "window_rps": rate, "cpu_s": cpu,
                        "rss_mib": rss + growth * i, "cache_mib": 48.0})
    return samples


def test_throughput_dip_from_other_load_with_flat_cost_is_flat():
    result = verdict(_samples([100] * 6 + [40] * 6, [10.0] * 12))
    assert result["throughput_flat"] is False and result["cost_flat"] is True and result["flat"] is True


def test_rising_cost_per_response_is_not_flat():
    result = verdict(_samples([100] * 6 + [40] * 6, [10.0] * 6 + [20.0] * 6))
    assert result["cost_flat"] is False and result["flat"] is False


def test_rss_growth_outside_caches_is_not_flat_whatever_the_rate():
    result = verdict(_samples([100] * 12, [10.0] * 12, growth=5.0))  # 55 MiB > 5% of 600
    assert result["rss_flat"] is False and result["flat"] is False
    assert verdict(_samples([100] * 12, [10.0] * 12, growth=2.0))["flat"] is True  # 22 MiB < 30


def test_samples_without_cpu_time_fall_back_to_throughput():
    samples = [{k: v for k, v in s.items() if k != "cpu_s"} for s in _samples([100] * 6 + [40] * 6, [10.0] * 12)]
    result = verdict(samples)
    assert result["cpu_ms_per_response_first_third"] is None and result["flat"] is False
