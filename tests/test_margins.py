"""The margins of a change judged on few degrees of freedom (effx.analysis.margins): the
effective degrees of freedom of spreads whose changes share reference runs, and the coverage of
t margins built on them."""
import numpy as np
import pytest

from effx.analysis.margins import combined, effective_dof, margins, pooled_spread, quantile


@pytest.mark.parametrize("seeds", [2, 3])
def test_the_margin_of_a_change_averaged_over_seeds_covers_95_percent(seeds):
    """Three recipes sharing the plain run of each seed, every run with the same training noise:
    the mean change +- its margin (the pooled spread over the root of the seeds, times the t
    quantile of the spread's effective degrees of freedom) covers the true change in about 95%
    of trials (Satterthwaite errs a little to the safe side); the nominal degrees of freedom and
    the normal quantile cover less."""
    rng = np.random.default_rng(3)
    trials, k, hits = 3000, 3, {"effective": 0, "nominal": 0, "normal": 0}
    for _ in range(trials):
        change = rng.normal(size=(k, seeds)) - rng.normal(size=seeds)    # true change 0
        spread = pooled_spread([[(change[r, s], f"plain {s}") for s in range(seeds)]
                                  for r in range(k)])
        low, high, margin_low, margin = margins(
            combined(0.0, 0.0, spread.sd / np.sqrt(seeds), spread.effective), 1)
        assert low == high and margin_low == pytest.approx(margin)
        miss = abs(change[0].mean())
        hits["effective"] += miss <= margin
        hits["nominal"] += miss <= quantile(1, spread.dof) * high
        hits["normal"] += miss <= quantile(1) * high
    assert spread.effective == pytest.approx((seeds - 1) * 4 * k / (k + 3))
    cover = {name: n / trials for name, n in hits.items()}
    assert 0.94 <= cover["effective"] <= 0.98, cover
    assert cover["normal"] < 0.92 and cover["nominal"] < cover["effective"] - 0.01, cover


@pytest.mark.parametrize("seeds, dev", [(2, 0.7), (3, 0.7), (2, 1.5)])
def test_a_family_of_recipes_is_judged_at_95_percent_with_the_dev_sets_error_beside(seeds, dev):
    """As above, with the dev set's sampling error (known, independent of the training's) added
    to each mean change, and the three recipes judged as a family: the chance that none of them
    clears its larger margin while none truly changed stays near 95% (94-96% in these cases);
    the normal quantile covers less."""
    rng = np.random.default_rng(4)
    trials, k, family, normal = 3000, 3, 0, 0
    for _ in range(trials):
        change = rng.normal(size=(k, seeds)) - rng.normal(size=seeds)
        spread = pooled_spread([[(change[r, s], s) for s in range(seeds)] for r in range(k)])
        mean = change.mean(axis=1) + rng.normal(scale=dev, size=k)
        low, high, margin_low, margin = margins(
            combined(dev, dev, spread.sd / np.sqrt(seeds), spread.effective), k)
        family += np.all(np.abs(mean) <= max(margin_low, margin))
        normal += np.all(np.abs(mean) <= quantile(k) * high)
    assert 0.93 <= family / trials <= 0.975, family / trials
    assert normal < family


def test_the_margins_change_smoothly_where_the_two_sources_cross():
    """The larger standard error alone takes the training's few degrees of freedom when the
    training's part is the larger and more as the dev set's part grows: no jump at the
    crossing (a 2% change in the estimate once moved a margin by 80%)."""
    below, above = (margins(combined(1.0, 1.0, sd, 2.0), 3) for sd in (0.99, 1.01))
    assert below[2] == pytest.approx(above[2], rel=0.1)
    assert below[3] == pytest.approx(above[3], rel=0.1)
    assert combined(1.0, 1.0, 2.0, 2.0)[2] == 2.0                    # the training's alone
    assert combined(3.0, 3.0, 1.0, 2.0)[2] == pytest.approx(162.0)   # mostly the dev set's


def test_margins_without_one_source_or_with_a_bad_count():
    assert combined(1.0, 1.2, np.nan, np.nan) == (1.0, 1.2, np.inf, np.inf)
    assert all(np.isnan(combined(np.nan, np.nan, 1.0, 2.0)))            # no sampling error
    assert combined(1.0, 1.0, 0.0, 2.0)[2:] == (np.inf, np.inf)
    with pytest.raises(ValueError, match="train_dof"):
        combined(1.0, 1.0, 0.5, np.nan)


def test_the_effective_degrees_of_freedom_of_changes_sharing_a_reference():
    independent = [[("a", s) for s in range(3)], [("b", s) for s in range(3)]]
    assert effective_dof(independent) == pytest.approx(4)        # the nominal count
    shared = [[s for s in range(3)] for _ in range(2)]                   # two recipes, one plain
    assert effective_dof(shared) == pytest.approx(2 * 4 * 2 / 5)
    rng = np.random.default_rng(0)                                       # against simulation
    change = rng.normal(size=(20000, 2, 3)) - rng.normal(size=(20000, 1, 3))
    ss = ((change - change.mean(axis=2, keepdims=True)) ** 2).sum(axis=(1, 2))
    assert 2 * ss.mean() ** 2 / ss.var() == pytest.approx(3.2, rel=0.05)
