"""Shared test setup: quiet TensorFlow, hide GPUs, paths to the shared real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
FASHION_DIR = SHARED_DATA / "fashion-mnist"
SMS_FILE = SHARED_DATA / "sms-spam" / "SMSSpamCollection.tsv"

#: tests that take 2 s or more on 2 cores (``pytest --durations``), their parametrizations
#: included: marked ``slow`` so that ``-m "not slow"`` is a quick loop (the default run, what
#: CI runs, still runs them all)
#: files whose module fixtures export or train real models (every test in them waits for one)
SLOW_FILES = {"test_coverage.py", "test_export_fixes.py", "test_portable.py", "test_notebook.py",
              "test_model_package.py", "test_output_contract.py"}
SLOW_TESTS: dict[str, set[str]] = {
    "test_bench.py": {
        "test_bench_onnx_models",
    },
    "test_check.py": {
        "test_baseline_contents",
        "test_check_and_plugin_read_an_idx_folder",
        "test_check_json_on_stdout",
        "test_plugin_assert_latency_ratio",
        "test_plugin_edge_model_marker",
        "test_slower_model_fails",
    },
    "test_cli.py": {
        "test_export_prints_only_edgekit_lines",
        "test_export_verbose_shows_library_lines",
    },
    "test_compare.py": {
        "test_compare_budget_zero_without_labels",
        "test_compare_cli",
    },
    "test_coverage.py": {
        "test_application_family_exports",
        "test_light_family_exports",
    },
    "test_data_folders.py": {
        "test_export_validates_on_images_and_quantizes_with_test_sets",
        "test_tune_accepts_both_layouts",
    },
    "test_engines.py": {
        "test_both_engines_give_the_same_values",
    },
    "test_export.py": {
        "test_cnn_matches_keras_at_batch_1_and_64",
        "test_error_existing_output_without_force",
        "test_error_unsupported_layer",
        "test_error_validation_above_atol_writes_nothing",
        "test_h5_and_savedmodel_sources",
        "test_in_memory_model_and_force",
        "test_keras_metadata_and_labels_reach_onnx",
        "test_text_lstm_is_one_lstm_op",
        "test_two_input_functional_model",
        "test_validation_data_uint8_is_scaled_by_metadata",
    },
    "test_export_fixes.py": {
        "test_adapted_normalization_constants_are_bound",
        "test_cli_prints_degenerate_warning",
        "test_custom_layer_exports_with_custom_objects",
        "test_degenerate_outputs_warn_and_fail_with_strict",
        "test_dynamic_length_is_probed_against_keras",
        "test_grouped_conv_and_exact_gelu_convert",
        "test_gru_loop_survives_simplification",
        "test_keras_failure_is_reported_as_keras_failure",
        "test_unconvertible_op_hint_names_the_layer_not_the_opset",
        "test_validation_runs_keras_and_onnx_in_bounded_batches",
    },
    "test_faults.py": {
        "test_sigterm_during_export_removes_staging",
    },
    "test_notebook.py": {
        "test_walkthrough_runs_from_any_working_directory",
    },
    "test_portable.py": {
        "test_auto_writes_no_variant_bigger_than_fp32",
        "test_every_variant_is_standard_onnx_and_runs_in_openvino",
        "test_output_kinds_from_keras_and_override",
        "test_quantize_leaves_no_stray_files_in_the_working_dir",
        "test_runtime_only_install_can_inspect_run_and_check",
    },
    "test_profile.py": {
        "test_bench_profile_prints_both_engines_and_the_why_line",
    },
    "test_quantize.py": {
        "test_dynamic_lstm_and_auto",
        "test_export_int8_ort",
        "test_gate_keeps_nodes_in_float",
    },
    "test_readback.py": {
        "test_valid_handmade_baseline_is_accepted",
    },
    "test_readme.py": {
        "test_readme_shell_blocks_run_in_a_copy",
    },
    "test_recipes.py": {
        "test_cli_grid_search",
        "test_cli_train_csv_multiclass_and_force",
        "test_image_cnn_small",
        "test_tabular_breast_cancer_and_seed",
        "test_text_lstm_sms_subset",
    },
    "test_serve.py": {
        "test_real_server_under_load",
    },
    "test_serve_features.py": {
        "test_shipped_mlp_over_http_4xx_for_bad_numbers",
    },
    "test_serve_hostile.py": {
        "test_1100_stalled_connections_under_ulimit_1024",
        "test_slow_and_silent_clients_are_closed_within_the_timeouts",
    },
    "test_serve_shutdown.py": {
        "test_sigterm_under_load_answers_every_accepted_request",
    },
    "test_serve_tls.py": {
        "test_1100_stalled_tls_handshakes_under_ulimit_1024",
        "test_bad_certificate_or_key_is_a_clear_start_up_error",
        "test_silent_and_partial_tls_handshakes_close_within_the_header_timeout",
        "test_silent_client_after_the_handshake_is_closed_at_the_header_timeout",
    },
    "test_serve_props.py": {
        "test_predict_never_answers_5xx",
        "test_v2_infer_never_answers_5xx",
    },
    "test_tolerance.py": {
        "test_deep_model_with_float_noise_passes_and_a_changed_weight_fails",
    },
    "test_tune.py": {
        "test_float_region_extends_through_activation_and_pooling",
        "test_measure_ratio_of_a_model_against_itself_is_near_one",
        "test_simplify_removes_dynamic_flatten_and_keeps_outputs",
        "test_tune_cli_errors_leave_nothing",
        "test_tune_cli_writes_the_model_and_prints_the_table",
        "test_tune_writes_the_winner_with_session_settings",
    },
}


#: seconds each file takes in a serial run on 2 cores (``pytest --durations``, rounded up): the
#: xdist workers (``-n 3 --dist loadfile``) take files longest first, so they end together
FILE_SECONDS = {
    "test_coverage.py": 170, "test_portable.py": 65, "test_readme.py": 50, "test_check.py": 35,
    "test_recipes.py": 30, "test_export.py": 30, "test_tune.py": 25, "test_cli.py": 20,
    "test_export_fixes.py": 20, "test_notebook.py": 20, "test_faults.py": 15,
    "test_quantize.py": 15, "test_serve_props.py": 15, "test_serve_tls.py": 30,
    "test_serve_shutdown.py": 25, "test_serve_hostile.py": 12, "test_data_folders.py": 25,
    "test_compare.py": 12, "test_readback.py": 12, "test_bench.py": 10, "test_zoo.py": 30,
    "test_explain.py": 5, "test_output_contract.py": 30, "test_profile.py": 8,
    "test_tolerance.py": 20,
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest files first (a stable sort: each file's own order stays); mark the tests of
    :data:`SLOW_TESTS` and :data:`SLOW_FILES` slow."""
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))
    for item in items:
        name = getattr(item, "originalname", item.name)
        if item.path.name in SLOW_FILES or name in SLOW_TESTS.get(item.path.name, ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """Folder of Fashion-MNIST IDX gz files (skips when ../shared/data is absent)."""
    if not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST not found at {FASHION_DIR}")
    return FASHION_DIR


@pytest.fixture(scope="session")
def sms_file() -> Path:
    """The SMS Spam Collection TSV (skips when ../shared/data is absent)."""
    if not SMS_FILE.exists():
        pytest.skip(f"SMS Spam Collection not found at {SMS_FILE}")
    return SMS_FILE
