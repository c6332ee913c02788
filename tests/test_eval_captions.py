"""Caption metrics: exact matches score the maximum, unrelated text less, reference order is irrelevant, bad input
is refused before any Java or model starts."""

from __future__ import annotations

import shutil

import pytest

from soundtok.eval.captions import METRICS, CaptionScores, caption_scores, caption_unavailable

HYPS = ["a dog barks loudly in the yard", "rain falls on a tin roof", "a man says the digit seven"]
REFS = [[h] for h in HYPS]  # one reference each: CIDEr-D's maximum (10) is reachable
UNRELATED = ["someone plays a cello slowly", "a car engine starts outside", "birds chirp in the early morning"]
MULTI = [
    ["a dog barks loudly in the yard", "a dog is barking", "the dog keeps barking outside"],
    ["rain falls on a tin roof", "heavy rain on a metal roof"],
    ["a man says the digit seven", "a male voice says seven"],
]


def needs(*metrics: str) -> None:
    for metric in metrics:
        reason = caption_unavailable(metric)
        if reason is not None:
            pytest.skip(reason)


@pytest.fixture(scope="module")
def coco_available() -> None:
    pytest.importorskip("pycocoevalcap")
    if shutil.which("java") is None:
        pytest.skip("java is not installed")


@pytest.fixture(scope="module")
def same(coco_available: None) -> CaptionScores:
    needs(*METRICS)
    return caption_scores(HYPS, REFS)


@pytest.fixture(scope="module")
def unrelated(coco_available: None) -> CaptionScores:
    needs(*METRICS)
    return caption_scores(UNRELATED, REFS)


def test_identical_captions_score_the_maximum(same: CaptionScores) -> None:
    assert same.n == 3
    assert same.bleu4 == pytest.approx(1.0, abs=1e-6)
    assert same.meteor == pytest.approx(1.0, abs=1e-6)
    assert same.rouge_l == pytest.approx(1.0)
    assert same.cider == pytest.approx(10.0)
    assert same.similarity == pytest.approx(1.0, abs=1e-5)
    assert same.similarity_mean_ref == pytest.approx(1.0, abs=1e-5)
    assert set(same.per_item) == set(METRICS) and all(len(v) == 3 for v in same.per_item.values())


def test_unrelated_captions_score_lower(same: CaptionScores, unrelated: CaptionScores) -> None:
    for metric in METRICS:
        assert getattr(unrelated, metric) < getattr(same, metric) - 0.3, metric
    assert unrelated.bleu4 == pytest.approx(0.0, abs=1e-3)
    assert unrelated.cider is not None and unrelated.cider < 0.1  # only "in the" and "a" are shared


def test_reference_order_does_not_matter(coco_available: None) -> None:
    needs(*METRICS)
    hyps = ["a dog is barking outside", "rain on a roof", ""]  # an empty answer is allowed and scores 0
    forward = caption_scores(hyps, MULTI)
    backward = caption_scores(hyps, [refs[::-1] for refs in MULTI])
    for name, value in forward.to_dict().items():
        assert backward.to_dict()[name] == pytest.approx(value, abs=1e-6), name
    assert forward.per_item["rouge_l"][2] == 0.0 and forward.per_item["meteor"][2] == 0.0


def test_a_subset_of_metrics(coco_available: None) -> None:
    needs("rouge_l")
    s = caption_scores(["A dog, barking!"], [["a dog barking"]], metrics=["rouge_l"])
    assert s.rouge_l == pytest.approx(1.0)  # PTB tokenisation: lower case, punctuation dropped
    assert s.bleu4 is None and s.similarity is None and set(s.per_item) == {"rouge_l"}


@pytest.mark.parametrize(
    ("hyps", "refs", "match"),
    [
        (["a", "b"], [["a"]], "2 hypotheses and 1 reference"),
        ([], [], "at least one hypothesis"),
        (["a"], [[]], "no reference"),
        (["a"], [["  "]], "non-blank"),
        (["a"], ["a dog"], "list of strings"),
        ([None], [["a"]], "must be a string"),
        ("a dog", [["a dog"]], "list of strings"),
    ],
)
def test_bad_input_is_refused(hyps: object, refs: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        caption_scores(hyps, refs)  # type: ignore[arg-type]


def test_unknown_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown caption metric"):
        caption_scores(["a"], [["a"]], metrics=["spice"])
