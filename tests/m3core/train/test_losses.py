"""M3Loss against values computed by hand (plain-Python math on the formulas), including self-distillation."""

from __future__ import annotations

import math

import pytest
import torch

from m3core.train.losses import M3Loss, group_scores


def ce(row: list[float], target: int, tau: float) -> float:
    """−log softmax(row/τ)[target], by hand."""
    z = [x / tau for x in row]
    return -(z[target] - math.log(sum(math.exp(v) for v in z)))


def softmax(row: list[float], tau: float) -> list[float]:
    e = [math.exp(x / tau) for x in row]
    return [v / sum(e) for v in e]


def soft_ce(row: list[float], teacher: list[float], tau: float) -> float:
    z = [x / tau for x in row]
    lse = math.log(sum(math.exp(v) for v in z))
    return -sum(t * (v - lse) for t, v in zip(teacher, z, strict=True))


DENSE = [[0.9, 0.1, 0.3, 0.2], [0.2, 0.4, 0.8, 0.0]]
SPARSE = [[1.5, 0.0, 0.2, 0.1], [0.0, 0.3, 0.9, 0.6]]
COLBERT = [[0.7, 0.5, 0.1, 0.3], [0.3, 0.2, 0.6, 0.65]]
TARGET = [0, 2]  # two queries, groups of 2: passages 0-1 belong to query 0, 2-3 to query 1


def scores():
    return {"dense": torch.tensor(DENSE), "sparse": torch.tensor(SPARSE), "colbert": torch.tensor(COLBERT)}


def by_hand(tau=0.5, w=(1.0, 0.3, 1.0), lam=(1.0, 0.1, 1.0), distill=True, sd_tau=None, sd_lam=None):
    sd_tau, sd_lam = sd_tau or tau, sd_lam or lam
    modes = {"dense": DENSE, "sparse": SPARSE, "colbert": COLBERT}
    per = {m: sum(ce(s[i], TARGET[i], tau) for i in range(2)) / 2 for m, s in modes.items()}
    ens = [
        [w[0] * DENSE[i][j] + w[1] * SPARSE[i][j] + w[2] * COLBERT[i][j] for j in range(4)] for i in range(2)
    ]
    per["ensemble"] = sum(ce(ens[i], TARGET[i], tau) for i in range(2)) / 2
    total = (lam[0] * per["dense"] + lam[1] * per["sparse"] + lam[2] * per["colbert"] + per["ensemble"]) / 4
    if distill:
        teachers = [softmax(ens[i], sd_tau) for i in range(2)]
        sd = {m: sum(soft_ce(s[i], teachers[i], sd_tau) for i in range(2)) / 2 for m, s in modes.items()}
        per["self_distill"] = (
            sd_lam[0] * sd["dense"] + sd_lam[1] * sd["sparse"] + sd_lam[2] * sd["colbert"]
        ) / 3
        total = (total + per["self_distill"]) / 2
    per["loss"] = total
    return per


def test_unified_loss_with_self_distillation_matches_hand_computation():
    parts = M3Loss(temperature=0.5)(scores(), torch.tensor(TARGET), step=0)
    expected = by_hand()
    assert set(parts) == set(expected)
    for k, v in expected.items():
        assert float(parts[k]) == pytest.approx(v, rel=1e-5), k


def test_a_softer_self_distillation_temperature_matches_hand_computation():
    parts = M3Loss(temperature=0.5, self_distill_temperature=2.0)(scores(), torch.tensor(TARGET), step=0)
    expected = by_hand(sd_tau=2.0)
    for k, v in expected.items():
        assert float(parts[k]) == pytest.approx(v, rel=1e-5), k
    assert float(parts["self_distill"]) != pytest.approx(by_hand()["self_distill"], rel=1e-3)


def test_self_distillation_weights_of_their_own_match_hand_computation():
    parts = M3Loss(temperature=0.5, self_distill_weights=(1.0, 1.0, 0.5))(
        scores(), torch.tensor(TARGET), step=0
    )
    for k, v in by_hand(sd_lam=(1.0, 1.0, 0.5)).items():
        assert float(parts[k]) == pytest.approx(v, rel=1e-5), k
    assert float(parts["dense"]) == pytest.approx(by_hand()["dense"], rel=1e-5)  # L keeps mode_weights


def test_self_distillation_warm_up_switch():
    loss = M3Loss(temperature=0.5, self_distill_start_step=10)
    before = loss(scores(), torch.tensor(TARGET), step=9)
    after = loss(scores(), torch.tensor(TARGET), step=10)
    assert "self_distill" not in before
    assert float(before["loss"]) == pytest.approx(by_hand(distill=False)["loss"], rel=1e-5)
    assert float(after["loss"]) == pytest.approx(by_hand()["loss"], rel=1e-5)
    off = M3Loss(temperature=0.5, self_distill=False)(scores(), torch.tensor(TARGET), step=100)
    assert "self_distill" not in off


def test_weights_are_constructor_arguments():
    w, lam = (0.5, 1.0, 2.0), (0.3, 0.7, 0.2)
    parts = M3Loss(temperature=0.5, ensemble_weights=w, mode_weights=lam)(
        scores(), torch.tensor(TARGET), step=0
    )
    assert float(parts["loss"]) == pytest.approx(by_hand(w=w, lam=lam)["loss"], rel=1e-5)


def test_dense_only_stage_is_plain_info_nce():
    parts = M3Loss(temperature=0.5, modes=("dense",))(scores(), torch.tensor(TARGET), step=0)
    assert set(parts) == {"dense", "loss"}
    assert float(parts["loss"]) == pytest.approx(by_hand()["dense"], rel=1e-5)


def test_self_distillation_teacher_gets_no_gradient():
    s = {k: v.clone().requires_grad_(True) for k, v in scores().items()}
    parts = M3Loss(temperature=0.5)(s, torch.tensor(TARGET), step=0)
    parts["self_distill"].backward()
    # d/ds_dense of λ_d·soft_ce(s_dense, teacher)/3 is λ_d/3·(softmax(s/τ) − teacher)/τ per row (÷2 rows): the
    # teacher is constant, so the gradient is exactly that (no term through the ensemble).
    tau = 0.5
    ens = [[DENSE[i][j] + 0.3 * SPARSE[i][j] + COLBERT[i][j] for j in range(4)] for i in range(2)]
    for i in range(2):
        p, t = softmax(DENSE[i], tau), softmax(ens[i], tau)
        for j in range(4):
            assert float(s["dense"].grad[i, j]) == pytest.approx((p[j] - t[j]) / tau / 3 / 2, abs=1e-6)


TEACHER = [[2.0, 0.0], [1.0, 1.0]]


def test_kl_div_kd_adds_soft_targets_over_each_group():
    tau = 0.5
    parts = M3Loss(temperature=tau, modes=("dense",), kd_loss="kl_div")(
        scores(), torch.tensor(TARGET), step=0, teacher_scores=torch.tensor(TEACHER), group_size=2
    )
    own = [DENSE[0][0:2], DENSE[1][2:4]]
    soft = [softmax(TEACHER[0], 1.0), softmax(TEACHER[1], 1.0)]
    expected = by_hand(tau=tau)["dense"] + sum(soft_ce(own[i], soft[i], tau) for i in range(2)) / 2
    assert float(parts["loss"]) == pytest.approx(expected, rel=1e-5)


def m3_kd_by_hand(row: list[float], start: int, teacher: list[float], tau: float) -> float:
    """Σ_i p_i · CE(row without the columns start..start+i-1, start+i), by hand."""
    total = 0.0
    for i, p in enumerate(teacher):
        kept = [j for j in range(len(row)) if not start <= j < start + i]
        z = {j: row[j] / tau for j in kept}
        total += p * -(z[start + i] - math.log(sum(math.exp(v) for v in z.values())))
    return total


def test_m3_kd_loss_matches_hand_computation():
    tau, t_tau = 0.5, 0.7
    parts = M3Loss(temperature=tau, modes=("dense",), kd_loss="m3_kd_loss", teacher_temperature=t_tau)(
        scores(), torch.tensor(TARGET), step=0, teacher_scores=torch.tensor(TEACHER), group_size=2
    )
    expected = sum(m3_kd_by_hand(DENSE[i], TARGET[i], softmax(TEACHER[i], t_tau), tau) for i in range(2)) / 2
    assert float(parts["loss"]) == pytest.approx(expected, rel=1e-5)
    # not InfoNCE: the teacher moves weight to the negatives
    assert abs(expected - by_hand(tau=tau)["dense"]) > 1e-3


def test_kd_is_per_example():
    """A query without teacher scores: m3_kd_loss is its InfoNCE, kl_div adds nothing for it."""
    tau = 0.5
    has = torch.tensor([True, False])
    garbage = torch.tensor([TEACHER[0], [9.0, -9.0]])  # the second row must be ignored
    m3 = M3Loss(temperature=tau, modes=("dense",), kd_loss="m3_kd_loss")(
        scores(), torch.tensor(TARGET), step=0, teacher_scores=garbage, has_teacher=has, group_size=2
    )
    expected = (m3_kd_by_hand(DENSE[0], 0, softmax(TEACHER[0], 1.0), tau) + ce(DENSE[1], 2, tau)) / 2
    assert float(m3["loss"]) == pytest.approx(expected, rel=1e-5)
    kl = M3Loss(temperature=tau, modes=("dense",), kd_loss="kl_div")(
        scores(), torch.tensor(TARGET), step=0, teacher_scores=garbage, has_teacher=has, group_size=2
    )
    expected = by_hand(tau=tau)["dense"] + soft_ce(DENSE[0][0:2], softmax(TEACHER[0], 1.0), tau)
    assert float(kl["loss"]) == pytest.approx(expected, rel=1e-5)


def test_teacher_scores_need_a_kd_loss():
    with pytest.raises(ValueError, match="kd_loss is 'none'"):
        M3Loss(modes=("dense",))(scores(), torch.tensor(TARGET), step=0, teacher_scores=torch.tensor(TEACHER))
    with pytest.raises(ValueError, match="kd_loss must be one of"):
        M3Loss(kd_loss="mse")


def test_group_scores_follow_the_targets_in_every_layout():
    g = group_scores(torch.tensor(DENSE), torch.tensor(TARGET), 2)
    assert g.flatten().tolist() == pytest.approx(DENSE[0][0:2] + DENSE[1][2:4])
    # cross-device: this rank (1 of 2) holds the second half of the columns; its targets carry the offset
    wide = torch.tensor([[0.0] * 4 + row for row in DENSE])
    g = group_scores(wide, torch.tensor(TARGET) + 4, 2)
    assert g.flatten().tolist() == pytest.approx(DENSE[0][0:2] + DENSE[1][2:4])


def test_kd_with_wide_dense_scores_uses_the_local_group():
    """The crash of issue 11: teacher scores with cross-device dense scores [B, W·B·G]."""
    tau = 0.5
    wide = torch.tensor([[0.0, 0.5] + row for row in DENSE])  # another rank's group in front
    parts = M3Loss(temperature=tau, kd_loss="kl_div")(
        scores(), torch.tensor(TARGET), step=0, dense_wide=wide, dense_wide_target=torch.tensor(TARGET) + 2,
        teacher_scores=torch.tensor(TEACHER), group_size=2,
    )  # fmt: skip
    own = [DENSE[0][0:2], DENSE[1][2:4]]
    soft = [softmax(TEACHER[i], 1.0) for i in range(2)]
    expected = sum(ce([0.0, 0.5] + DENSE[i], TARGET[i] + 2, tau) for i in range(2)) / 2
    expected += sum(soft_ce(own[i], soft[i], tau) for i in range(2)) / 2
    assert float(parts["dense"]) == pytest.approx(expected, rel=1e-5)


def test_wide_dense():
    wide = torch.tensor([row + [0.0, 0.5] for row in DENSE])  # two more (other-device) passages
    parts = M3Loss(temperature=0.5)(scores(), torch.tensor(TARGET), step=0, dense_wide=wide)
    expected = sum(ce(DENSE[i] + [0.0, 0.5], TARGET[i], 0.5) for i in range(2)) / 2
    assert float(parts["dense"]) == pytest.approx(expected, rel=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="modes"):
        M3Loss(modes=("bm25",))
    with pytest.raises(ValueError, match="missing"):
        M3Loss()({"dense": torch.tensor(DENSE)}, torch.tensor(TARGET), step=0)
    with pytest.raises(ValueError, match="three values"):
        M3Loss(ensemble_weights=(1.0, 1.0))
