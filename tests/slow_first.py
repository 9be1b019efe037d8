"""Slowest tests first, so pytest-xdist's workers finish together.

xdist hands tests out in collection order; a 68 s test collected near the end leaves one worker running it alone while
the other idles. Listing the slowest (measured with `pytest --durations=80`, call time >= 5 s on 2 cores) at the front
fills the tail with the many sub-second tests instead. Only the order changes: every test still runs, as it is. A name
here that no longer exists is ignored; a new slow test missing here just runs where it is collected.
"""

from __future__ import annotations

import pytest

# Slowest first (node ids without parameters: every parameter of a listed test moves).
SLOWEST: tuple[str, ...] = (
    "tests/lb/test_takeover.py::test_a_takeover_stopped_after_any_write_is_finished_by_the_next_run_with_no_failed_request",
    "tests/acceptance/test_acceptance_sim.py::test_a_run_killed_after_any_step_leaves_nothing_once_cleanup_ran",
    "tests/test_readme.py::test_readme_walkthrough_runs_as_written_in_a_fresh_directory",
    "tests/acceptance/test_acceptance_sim.py::test_the_whole_journey_passes_on_the_simulator_and_leaves_nothing",
    "tests/ci/test_gitlab_ci_local.py::test_switching_the_example_from_instance_groups_to_neg_under_load_fails_no_request",
    "tests/ci/test_gitlab_ci_local.py::test_a_project_moving_from_kubemci_takes_it_over_in_the_manual_job_with_no_failed_request",
    "tests/ci/test_gitlab_ci_local.py::test_manual_drain_job_takes_prod1_out_and_the_next_pipeline_keeps_it_drained",
    "tests/lb/test_lb_neg_switch.py::test_instance_groups_to_negs_and_back_under_load_fails_no_request_and_leaves_nothing_of_the_old_kind",
    "tests/ci/test_gitlab_ci_local.py::test_an_environment_removed_from_the_input_leaves_the_load_balancer_on_a_reused_runner_directory",
    "tests/ci/test_gitlab_ci_local.py::test_staging_in_a_production_namespace_with_the_release_input_leaves_production_behind_the_load_balancer",
    "tests/ci/test_gitlab_ci_local.py::test_a_takeover_whose_inputs_would_drop_https_stops_before_the_load_balancer_job_changes_anything",
    "tests/ci/test_gitlab_ci_local.py::test_gateway_mode_exports_every_cluster_and_publishes_the_gateways_address",
    "tests/test_demo.py::test_the_takeover_demo_moves_the_recipes_kubemci_load_balancer_with_traffic_flowing_and_no_failed_request",
    "tests/ci/test_gitlab_ci_local.py::test_example_pipeline_deploys_pins_provisions_then_tears_down",
    "tests/lb/test_lb_traffic.py::test_drain_under_20_requests_per_second_fails_no_request_and_moves_prod1s_share_to_0_and_back",
    "tests/ci/test_cilocal.py::test_own_project_pipeline_runs_with_the_printed_gitlab_ci_local_command",
    "tests/ci/test_gitlab_ci_local.py::test_a_teardown_pipeline_runs_no_deploy_job_whatever_auto_devops_would_deploy",
    "tests/ci/test_gitlab_ci_local.py::test_example_pipeline_with_neg_backends_exposes_instead_of_pinning_and_serves_from_the_pods",
    "tests/ci/test_gitlab_ci_local.py::test_hosted_mode_deploys_without_node_ports_and_publishes_the_multi_cluster_ingress_vip",
    "tests/ci/test_gitlab_ci_local.py::test_a_projects_own_production_before_script_keeps_the_node_port",
    "tests/ci/test_gitlab_ci_local.py::test_a_project_whose_own_values_run_the_app_on_8080_is_deployed_on_8080_and_served_by_the_load_balancer",
    "tests/lb/test_takeover.py::test_rollback_mid_way_restores_the_old_chain_with_no_failed_request",
    "tests/lb/test_takeover_traffic.py::test_takeover_of_a_hand_made_https_chain_with_an_http_redirect_drops_no_request",
    "tests/test_demo.py::test_the_demo_passes_end_to_end_in_ci",
    "tests/lb/test_lb_negs.py::test_a_rollout_under_20_requests_per_second_fails_no_request",
    "tests/sim/test_sim_features_compute.py::test_gcloud_sets_every_option_on_a_backend_service_and_https_proxy_and_reads_them_back",
    "tests/sim/test_compute_gcloud.py::test_gcloud_creates_describes_and_lists_a_load_balancer_chain",
    "tests/sim/test_failover.py::test_failover_to_prod2_within_the_health_checks_detection_time_and_back_after_heal",
    "tests/lb/test_lb_negs.py::test_failed_pods_of_one_cluster_move_traffic_within_the_detection_time",
    "tests/lb/test_lb_traffic.py::test_requests_in_flight_on_a_cluster_being_drained_finish_there",
    "tests/gateway/test_sim_controllers.py::test_routes_for_different_hostnames_are_routed_apart",
    "tests/gateway/test_gateway_policies.py::test_backend_options_become_a_gcp_backend_policy_per_export_that_gke_puts_on_its_backend_services",
    "tests/gateway/test_gateway_commands.py::test_weights_nine_to_one_are_what_the_data_plane_serves",
    "tests/sim/test_sim_negs.py::test_gcloud_lists_the_negs_and_their_endpoints",
    "tests/lb/test_lb_features_policies.py::test_a_cloud_armor_policy_denying_the_client_answers_403_and_removing_it_serves_again",
    "tests/lb/test_lb_traffic.py::test_status_shows_each_clusters_weight_and_drain_state",
    "tests/lb/test_lb_changes.py::test_status_shows_vip_health_per_cluster_and_zone_and_a_diagram",
    "tests/lb/test_lb_https.py::test_pre_shared_certificate_and_static_ip_made_with_gcloud_are_used_and_kept",
    "tests/lb/test_lb_changes.py::test_status_wait_exits_3_when_a_cluster_stays_unhealthy",
    "tests/lb/test_lb_negs.py::test_negs_gke_names_itself_are_used_as_the_controller_reports_them",
    "tests/sim/test_dataplane.py::test_get_health_follows_failures_of_pods_and_of_a_zones_nodes",
    "tests/gateway/test_gateway_commands.py::test_gateway_over_three_clusters_serves_from_all_and_delete_leaves_nothing",
    "tests/gateway/test_gateway_commands.py::test_drain_moves_traffic_away_without_a_failed_request",
    "tests/sim/test_sim_negs_traffic.py::test_a_rollout_in_both_clusters_under_20_requests_per_second_fails_no_request",
    "tests/lb/test_takeover_traffic.py::test_takeover_of_a_kubemci_https_chain_to_external_managed_drops_no_request",
    "tests/gateway/test_gateway_commands.py::test_a_cluster_dropped_from_context_loses_its_exports_and_a_rerun_writes_nothing",
    "tests/gateway/test_gateway_commands.py::test_an_ingress_becomes_httproute_matches_split_per_cluster",
    "tests/lb/test_lb_traffic.py::test_weights_3_to_1_send_three_quarters_of_the_requests_to_the_heavier_cluster",
    "tests/gateway/test_gateway_commands.py::test_path_and_header_matches_of_the_users_httproute_route_by_cluster",
    "tests/lb/test_takeover_traffic.py::test_takeover_of_an_http_only_chain_drops_no_request",
    "tests/lb/test_takeover_traffic.py::test_takeover_of_a_two_cluster_chain_onto_three_clusters_drops_no_request",
    "tests/gateway/test_gateway_commands.py::test_each_environment_exports_its_cluster_and_the_one_apply_after_writes_no_export",
    "tests/gateway/test_gateway_commands.py::test_https_with_a_named_address_and_a_redirect_from_http",
    "tests/lb/test_lb_features.py::test_generated_cookie_affinity_keeps_a_client_on_one_backend",
    "tests/lb/test_lb_traffic.py::test_draining_a_cluster_covers_every_service_an_ingress_routes_to",
    "tests/lb/test_lb_negs.py::test_a_zone_without_a_pod_of_the_app_is_not_unhealthy_while_its_cluster_serves",
    "tests/lb/test_lb_features.py::test_ipv6_gets_its_own_address_and_rules_and_the_address_is_kept_when_the_option_goes",
    "tests/lb/test_lb_features.py::test_a_custom_response_header_is_seen_by_an_http_client",
    "tests/sim/test_sim_features_compute.py::test_a_team_creates_a_certificate_map_with_gcloud_in_certificate_manager",
)


def slowest_first(items: list[pytest.Item]) -> None:
    """Reorder ``items`` in place: the tests named in SLOWEST first (in its order), then the rest as collected."""
    rank = {name: i for i, name in enumerate(SLOWEST)}
    unlisted = len(SLOWEST)
    # sorted() is stable: unlisted tests keep their collection order, so every xdist worker computes the same order.
    items[:] = sorted(items, key=lambda item: rank.get(item.nodeid.split("[", 1)[0], unlisted))
