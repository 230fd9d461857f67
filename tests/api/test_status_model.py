"""The status models: readable estimate for the Est-GPU column, metrics kept from the worker."""

from influence_trace.api.status import EstimateStatus, ResultStatus


def test_estimate_gets_a_readable_gpu_figure() -> None:
    est = EstimateStatus(pool="h100", gpu_bytes=44_900_000_000, host_bytes=1)
    assert est.gpu == "44.9 GB"
    assert est.model_dump(by_alias=True)["gpu"] == "44.9 GB"
    assert EstimateStatus(gpu_bytes=1, gpu="custom").gpu == "custom"


def test_result_keeps_the_worker_metrics_and_drops_unknown_fields() -> None:
    message = {"rowsEmitted": 96, "metrics": {"auc": 0.97, "signConsistency": 0.9}, "bogus": 1}
    result = ResultStatus.model_validate(message)
    assert result.rows_emitted == 96 and result.metrics == {"auc": 0.97, "signConsistency": 0.9}
    assert "bogus" not in result.model_dump(by_alias=True)
