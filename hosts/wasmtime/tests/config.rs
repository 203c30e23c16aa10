//! Scenario 4: a config the filter refuses fails `proxy_on_configure`, and says why.

mod common;

use common::*;
use jwt_guard_wasmtime_host::Options;

#[test]
fn a_provider_without_audiences_is_refused_and_the_log_names_the_field() {
    let mut config = local_config();
    config["providers"][0]
        .as_object_mut()
        .unwrap()
        .remove("audiences");
    let mut w = proxy().worker(Options::default()).unwrap();
    assert!(!w.configure(&config.to_string()).unwrap());
    assert!(
        w.logged("invalid configuration: providers[0].audiences"),
        "{:?}",
        w.logs()
    );
}

#[test]
fn json_that_is_not_a_config_is_refused() {
    let mut w = proxy().worker(Options::default()).unwrap();
    assert!(!w.configure("{\"providers\": ").unwrap());
    assert!(!w.configure("").unwrap());
    assert!(w.trap().is_none());
}

#[test]
fn the_module_imports_only_what_this_host_implements() {
    // Every import is defined (instantiation would fail otherwise); this pins the list,
    // so a new host call shows up here and in the README's table.
    let mut imports = filter().imports();
    imports.sort();
    let expected = [
        "env.proxy_add_header_map_value",
        "env.proxy_call_foreign_function",
        "env.proxy_close_stream",
        "env.proxy_continue_stream",
        "env.proxy_define_metric",
        "env.proxy_dequeue_shared_queue",
        "env.proxy_done",
        "env.proxy_enqueue_shared_queue",
        "env.proxy_get_buffer_bytes",
        "env.proxy_get_current_time_nanoseconds",
        "env.proxy_get_header_map_pairs",
        "env.proxy_get_header_map_value",
        "env.proxy_get_log_level",
        "env.proxy_get_property",
        "env.proxy_get_shared_data",
        "env.proxy_get_status",
        "env.proxy_grpc_call",
        "env.proxy_grpc_cancel",
        "env.proxy_grpc_close",
        "env.proxy_grpc_send",
        "env.proxy_grpc_stream",
        "env.proxy_http_call",
        "env.proxy_increment_metric",
        "env.proxy_log",
        "env.proxy_record_metric",
        "env.proxy_register_shared_queue",
        "env.proxy_remove_header_map_value",
        "env.proxy_replace_header_map_value",
        "env.proxy_resolve_shared_queue",
        "env.proxy_send_local_response",
        "env.proxy_set_buffer_bytes",
        "env.proxy_set_effective_context",
        "env.proxy_set_header_map_pairs",
        "env.proxy_set_property",
        "env.proxy_set_shared_data",
        "env.proxy_set_tick_period_milliseconds",
        "wasi_snapshot_preview1.environ_get",
        "wasi_snapshot_preview1.environ_sizes_get",
        "wasi_snapshot_preview1.fd_write",
        "wasi_snapshot_preview1.proc_exit",
        "wasi_snapshot_preview1.random_get",
    ];
    assert_eq!(imports, expected);
}
