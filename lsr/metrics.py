"""Effectiveness metrics through ir-measures (trec_eval's definitions)."""

from __future__ import annotations

# Report name -> ir_measures name. MRR@10 is trec_eval's reciprocal rank cut at 10.
MEASURES = {
    "nDCG@10": "nDCG@10",
    "Recall@100": "R@100",
    "Recall@1000": "R@1000",
    "MRR@10": "RR@10",
}
# The official measures of MS MARCO passage dev (small): MRR@10 and recall at 1000.
MSMARCO_DEV_MEASURES = {"MRR@10": "RR@10", "Recall@1000": "R@1000"}
# TREC Deep Learning (2019, 2020): nDCG@10 over the graded judgements (0 to 3) and recall at
# 1000 counting only judgements of 2 or more as relevant, as the track overviews define them.
TREC_DL_MEASURES = {"nDCG@10": "nDCG@10", "Recall@1000 (rel>=2)": "R(rel=2)@1000", "MRR@10 (rel>=2)": "RR(rel=2)@10"}


def measures_for(dataset: str) -> dict[str, str]:
    """The measures a dataset's results are reported in: TREC DL's for ``trec-dl`` ids and the
    local DL19 subset, MS MARCO dev's for ``msmarco-passage/dev``, else BEIR's (`MEASURES`)."""
    name = dataset.lower()
    if "trec-dl" in name or name.startswith("msmarco-dl19"):
        return TREC_DL_MEASURES
    if name.startswith("msmarco-passage/dev"):
        return MSMARCO_DEV_MEASURES
    return MEASURES


def evaluate(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]],
             measures: dict[str, str] | None = None) -> dict[str, float]:
    """Mean of each measure over the queries of ``qrels`` (a query with no results scores 0).

    Args:
        run: ``{query_id: {doc_id: score}}``.
        qrels: ``{query_id: {doc_id: relevance}}``.
        measures: report name -> ir_measures name (default `MEASURES`; `measures_for`).
    """
    import ir_measures

    measures = MEASURES if measures is None else measures
    parsed = {name: ir_measures.parse_measure(spec) for name, spec in measures.items()}
    totals = {name: 0.0 for name in measures}
    by_measure = {measure: name for name, measure in parsed.items()}
    for metric in ir_measures.iter_calc(list(parsed.values()), qrels, run):
        totals[by_measure[metric.measure]] += metric.value
    judged = len(qrels)
    return {name: totals[name] / judged if judged else 0.0 for name in measures}
