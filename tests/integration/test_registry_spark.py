"""The linkage model on Spark (local pyspark, one core): the same links as on DuckDB.

Kept small (a few hundred records) so that it runs in CI beside everything else."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from fhir_cart.registry.definition import LinkageDef
from fhir_cart.registry.linkage import cluster, linkage_record, probabilistic_links
from fhir_cart.registry.pseudonyms import Pseudonymiser
from fhir_cart.testing.registry_data import make_registry
from tests.conftest import need

pytestmark = [
    pytest.mark.integration,
    # pyspark 3.5's toPandas (splink's result) still calls distutils' LooseVersion
    pytest.mark.filterwarnings("ignore:distutils Version classes:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:is_datetime64tz_dtype is deprecated:DeprecationWarning"),
    # py4j leaves its gateway socket to the garbage collector
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    need(shutil.which("java") is not None, "Spark needs a Java runtime (java on PATH)")
    import pyspark.sql as pyspark_sql
    from splink.backends.spark import similarity_jar_location

    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # only the loopback interface
    session = (
        pyspark_sql.SparkSession.builder.master("local[1]")
        .config("spark.jars", similarity_jar_location())
        .appName("fhir-cart-registry-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("spark-warehouse")))
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_spark_backend_finds_the_duckdb_links(spark: Any) -> None:
    data = make_registry(250, centres=3, seed=4)
    key = Pseudonymiser(b"spark-test-key-0123456789abcdefgh")
    duck = LinkageDef(train="never")
    records = [linkage_record(c, duck, key) for cases in data.cases.values() for c in cases]
    on_duckdb = probabilistic_links(records, duck)
    jobs_before = len(spark.sparkContext.statusTracker().getJobIdsForGroup(None))
    on_spark = probabilistic_links(
        records, duck.model_copy(update={"backend": "spark"}), spark=spark
    )
    assert len(spark.sparkContext.statusTracker().getJobIdsForGroup(None)) > jobs_before
    assert on_duckdb, "the generated centres share patients"
    assert [(k.left, k.right) for k in on_spark] == [(k.left, k.right) for k in on_duckdb]
    for a, b in zip(on_spark, on_duckdb, strict=True):
        assert a.probability == pytest.approx(b.probability, abs=1e-4)
    clusters = cluster(records, on_spark, duck.threshold)
    assert len(set(clusters.patient_of.values())) < len(records)
