use clap::Parser;
use solgrid_device_plugin::app;
use solgrid_device_plugin::config::{LogFormat, Settings};
use tracing_subscriber::EnvFilter;

fn init_logs(format: LogFormat, list: bool) {
    let _ = list;
    let default = "info";
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> std::process::ExitCode {
    let settings = Settings::parse();
    init_logs(settings.log_format, settings.list);
    if settings.list {
        let found = app::discover(app::backends(&settings, None), None);
        let managers: Vec<_> = found.into_iter().map(|(_, m)| m).collect();
        let report = app::list_report(&managers);
        if settings.json {
            match serde_json::to_string_pretty(&report) {
                Ok(s) => println!("{s}"),
                Err(e) => {
                    eprintln!("error: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            }
        } else {
            print!("{}", app::render_list(&report));
        }
        return std::process::ExitCode::SUCCESS;
    }
    // One thread: the plugin's async work is light (gRPC with the kubelet,
    // /metrics, inventory), and NVML / sysfs health run on their own threads.
    // benches/allocate.rs compares it with a multi-thread runtime.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(app::run(settings)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "device plugin failed");
            std::process::ExitCode::FAILURE
        }
    }
}
