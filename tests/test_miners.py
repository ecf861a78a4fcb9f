"""Multi-label miners: exact mined pairs on a hand-built batch, and the PML loss contract."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import losses
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from metricls.errors import InputError
from metricls.miners import LabelMiner, SharedLabelMiner, pairs_to_triplets

VOCAB = ["a", "b", "c", "d"]
LABEL_SETS = [{"a", "b"}, {"a", "b", "c"}, {"c"}, {"d"}, {"a"}]
# Unit vectors, so the cosine similarities below are exact dot products.
EMB = torch.tensor([
    [1.0, 0.0, 0.0],  # 0 {a,b}
    [0.8, 0.6, 0.0],  # 1 {a,b,c}
    [0.0, 1.0, 0.0],  # 2 {c}
    [0.6, 0.0, 0.8],  # 3 {d}    cos(0,3)=0.6 > cos(0,2)=0
    [0.0, 0.8, 0.6],  # 4 {a}    cos(4,2)=0.8 > cos(4,3)=0.48
])
VECS = torch.tensor([  # label vectors a, b, c, d
    [1.0, 0.0, 0.0],
    [0.0, 1.0, 0.0],
    [0.0, 0.0, 1.0],
    [0.6, 0.8, 0.0],
])


def multi_hot(sets: list[set[str]], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor([[lab in s for lab in VOCAB] for s in sets], dtype=dtype)


def pairs(a: torch.Tensor, b: torch.Tensor) -> set[tuple[int, int]]:
    assert a.dtype == b.dtype == torch.long
    return set(zip(a.tolist(), b.tolist(), strict=True))


def jaccard(i: int, j: int) -> float:
    return len(LABEL_SETS[i] & LABEL_SETS[j]) / len(LABEL_SETS[i] | LABEL_SETS[j])


# ---------------------------------------------------------------- SharedLabelMiner


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.float32])
def test_shared_label_exact_pairs(dtype):
    a1, p, a2, n = SharedLabelMiner(hard_negatives=1)(EMB, multi_hot(LABEL_SETS, dtype))
    # J(0,1)=2/3, J(0,4)=1/2 (kept: >=); J(1,2)=J(1,4)=1/3 are neither positive nor negative.
    assert pairs(a1, p) == {(0, 1), (1, 0), (0, 4), (4, 0)}
    assert all(jaccard(i, j) >= 0.5 for i, j in pairs(a1, p))
    # Anchors 0, 1, 4 have positives; 2 and 3 have none, so keep no negatives.
    assert pairs(a2, n) == {(0, 3), (1, 3), (4, 2)}  # the hardest per anchor


def test_shared_label_all_negatives_and_threshold():
    y = multi_hot(LABEL_SETS)
    _, _, a2, n = SharedLabelMiner(hard_negatives=None)(EMB, y)
    every = {(0, 2), (0, 3), (1, 3), (4, 2), (4, 3)}
    assert pairs(a2, n) == every
    assert all(not LABEL_SETS[i] & LABEL_SETS[j] for i, j in every)
    assert pairs(*SharedLabelMiner(hard_negatives=0)(EMB, y)[2:]) == every
    assert pairs(*SharedLabelMiner(hard_negatives=20)(EMB, y)[2:]) == every  # fewer than 20
    a1, p, a2, n = SharedLabelMiner(min_jaccard=0.3, hard_negatives=None)(EMB, y)
    assert pairs(a1, p) == {(0, 1), (1, 0), (0, 4), (4, 0), (1, 2), (2, 1), (1, 4), (4, 1)}
    assert pairs(a2, n) == every | {(2, 0), (2, 3), (2, 4)}  # anchor 2 now has a positive


def test_shared_label_triplets():
    a, p, n = SharedLabelMiner(hard_negatives=1, triplets=True)(EMB, multi_hot(LABEL_SETS))
    got = set(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))
    assert got == {(0, 1, 3), (0, 4, 3), (1, 0, 3), (4, 0, 2)}


# ---------------------------------------------------------------------- LabelMiner


def test_label_miner_exact_pairs():
    a1, p, a2, n = LabelMiner(hard_negatives=1)(EMB, multi_hot(LABEL_SETS), ref_emb=VECS)
    assert pairs(a1, p) == {(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 2), (3, 3), (4, 0)}
    # Hardest lacking label: 0 -> d (0.6 vs c 0), 1 -> d (only one), 2 -> b (1.0),
    # 3 -> c (0.8 vs a 0.6), 4 -> b (0.8 vs d 0.64, c 0.6).
    assert pairs(a2, n) == {(0, 3), (1, 3), (2, 1), (3, 2), (4, 1)}
    _, _, a2, n = LabelMiner(hard_negatives=2)(EMB, multi_hot(LABEL_SETS), ref_emb=VECS)
    assert pairs(a2, n) == {(0, 3), (0, 2), (1, 3), (2, 1), (2, 3), (3, 2), (3, 0), (4, 1), (4, 3)}


def test_label_miner_all_and_random_negatives():
    y = multi_hot(LABEL_SETS)
    lacking = {(i, j) for i, s in enumerate(LABEL_SETS) for j, lab in enumerate(VOCAB)
               if lab not in s}
    assert pairs(*LabelMiner(hard_negatives=None)(EMB, y, ref_emb=VECS)[2:]) == lacking
    miner = LabelMiner(hard_negatives=1, random_negatives=1, seed=3)
    a2, n = miner(EMB, y, ref_emb=VECS)[2:]
    got = pairs(a2, n)
    assert len(got) == len(a2)  # no duplicates
    assert got <= lacking
    assert {(0, 3), (1, 3), (2, 1), (3, 2), (4, 1)} <= got  # hard ones kept
    assert torch.bincount(a2).tolist() == [2, 1, 2, 2, 2]  # item 1 lacks only d
    again = LabelMiner(hard_negatives=1, random_negatives=1, seed=3)(EMB, y, ref_emb=VECS)
    assert pairs(*again[2:]) == got


def test_label_miner_triplets():
    a, p, n = LabelMiner(hard_negatives=1, triplets=True)(EMB, multi_hot(LABEL_SETS), ref_emb=VECS)
    got = set(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))
    assert got == {(0, 0, 3), (0, 1, 3), (1, 0, 3), (1, 1, 3), (1, 2, 3), (2, 2, 1), (3, 3, 2),
                   (4, 0, 1)}


def test_pairs_to_triplets_matches_pml():
    g = torch.Generator().manual_seed(0)
    t = tuple(torch.randint(0, 7, (30,), generator=g) for _ in range(4))
    ours = set(zip(*(x.tolist() for x in pairs_to_triplets(t)), strict=True))
    pml = set(zip(*(x.tolist() for x in lmu.convert_to_triplets(t, None)), strict=True))
    assert ours == pml
    assert len(pairs_to_triplets(t)[0]) == len(lmu.convert_to_triplets(t, None)[0])


def test_collect_stats():
    miner = SharedLabelMiner(hard_negatives=1, triplets=True, collect_stats=True)
    miner(EMB, multi_hot(LABEL_SETS))
    assert (miner.num_pos_pairs, miner.num_neg_pairs, miner.num_triplets) == (4, 3, 4)


# -------------------------------------------------------------- empty and bad input


@pytest.mark.parametrize("triplets", [False, True])
def test_no_positives_gives_empty_tuple_and_zero_loss(triplets):
    arity = 3 if triplets else 4
    loss_fn = losses.TripletMarginLoss() if triplets else losses.MultiSimilarityLoss()
    emb = EMB.clone().requires_grad_()
    disjoint = multi_hot([{"a"}, {"b"}, {"c"}, {"d"}, set()])
    out = SharedLabelMiner(triplets=triplets)(emb, disjoint)
    unlabeled = torch.zeros(5, 4)
    out_l = LabelMiner(triplets=triplets)(emb, unlabeled, ref_emb=VECS)
    for t, ref in ((out, None), (out_l, VECS)):
        assert len(t) == arity and all(x.dtype == torch.long and len(x) == 0 for x in t)
        loss = loss_fn(emb, indices_tuple=t, ref_emb=ref)
        assert loss.item() == 0.0
        loss.backward()


@pytest.mark.parametrize("call", [
    lambda: SharedLabelMiner()(EMB, multi_hot(LABEL_SETS)[:, 0]),  # 1-D labels
    lambda: SharedLabelMiner()(EMB, multi_hot(LABEL_SETS)[:4]),  # B mismatch
    lambda: SharedLabelMiner()(EMB[0], multi_hot(LABEL_SETS)),  # 1-D embeddings
    lambda: SharedLabelMiner()(EMB, multi_hot(LABEL_SETS), ref_emb=VECS),  # no ref_emb
    lambda: LabelMiner()(EMB, multi_hot(LABEL_SETS)),  # ref_emb missing
    lambda: LabelMiner()(EMB, multi_hot(LABEL_SETS), ref_emb=VECS[:3]),  # L mismatch
    lambda: LabelMiner()(EMB, multi_hot(LABEL_SETS), ref_emb=VECS[:, :2]),  # d mismatch
    lambda: LabelMiner()(EMB, multi_hot(LABEL_SETS).tolist(), ref_emb=VECS),  # not a tensor
    lambda: SharedLabelMiner(min_jaccard=0.0),
    lambda: SharedLabelMiner(hard_negatives=-1),
    lambda: LabelMiner(random_negatives=None),
])
def test_bad_input_raises_input_error(call):
    with pytest.raises(InputError):
        call()


def test_shape_error_names_shapes():
    with pytest.raises(InputError, match=r"\(4, 4\)"):
        SharedLabelMiner()(EMB, multi_hot(LABEL_SETS)[:4])


# ------------------------------------------------------------------ loss contract

LOSSES = {
    "contrastive": (losses.ContrastiveLoss, False),
    "multi_similarity": (losses.MultiSimilarityLoss, False),
    "triplet": (losses.TripletMarginLoss, True),
    "supcon": (losses.SupConLoss, False),
    "ntxent": (losses.NTXentLoss, False),
}


def random_batch(seed: int, B: int = 32, L: int = 12, d: int = 16):
    """Random embeddings and label vectors; labels from 8 label sets so items share some."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(8, L, generator=g) < 0.2
    prototypes[torch.arange(8), torch.randint(0, L, (8,), generator=g)] = True
    y = prototypes[torch.randint(0, 8, (B,), generator=g)]
    emb = torch.randn(B, d, generator=g).requires_grad_()
    vecs = torch.randn(L, d, generator=g).requires_grad_()
    return emb, y, vecs


@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("miner_cls", [SharedLabelMiner, LabelMiner])
def test_mined_tuple_trains_with_pml_loss(miner_cls, loss_name):
    make_loss, triplets = LOSSES[loss_name]
    loss_fn = make_loss()
    emb, y, vecs = random_batch(0)
    with_ref = miner_cls is LabelMiner
    miner = miner_cls(hard_negatives=5, triplets=triplets)
    ref = vecs if with_ref else None
    t = miner(emb, y, ref_emb=ref) if with_ref else miner(emb, y)
    assert len(t) == (3 if triplets else 4) and len(t[0]) > 1
    params = [emb, vecs] if with_ref else [emb]
    opt = torch.optim.SGD(params, lr=0.5)
    history = []
    for _ in range(6):
        opt.zero_grad()
        loss = loss_fn(emb, indices_tuple=t, ref_emb=ref)  # labels=None
        assert torch.isfinite(loss)
        loss.backward()
        for x in params:
            assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        opt.step()
        history.append(loss.item())
    assert history[-1] < history[0], history
