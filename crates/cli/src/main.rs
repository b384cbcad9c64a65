//! The `cogo` binary: parses the command line, loads configuration once, wires the crates together.

mod args;
mod bench;
mod bus_cmd;
mod config_cmd;
mod doctor;
mod edge_worker;
mod gate;
mod goal_cmd;
mod knowledge_bench;
mod knowledge_cmd;
mod llm_cmd;
mod mcp_cmd;
mod node;
mod process_metrics;
mod reference;
mod secrets_cmd;
mod settings;

use std::process::ExitCode;

use clap::Parser;

/// A failure that maps to a specific exit code (2: bad configuration or usage).
#[derive(Debug)]
pub struct ExitWith(pub u8, pub String);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for ExitWith {}

fn main() -> ExitCode {
    process_metrics::limit_arenas();
    let cli = args::Cli::parse();
    if let Err(err) = settings::init_logging(&cli.global) {
        eprintln!("error: {err:#}");
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(ExitWith(code, text)) = err.downcast_ref::<ExitWith>() {
                if !text.is_empty() {
                    eprintln!("{text}");
                }
                return ExitCode::from(*code);
            }
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: args::Cli) -> anyhow::Result<()> {
    use args::Command;
    match cli.command {
        Command::Config(command) => config_cmd::run(&cli.global, command),
        Command::Policy(command) => config_cmd::policy(&cli.global, command),
        Command::Doctor(command) => runtime()?.block_on(doctor::run(&cli.global, command)),
        Command::Migrate => runtime()?.block_on(bus_cmd::migrate(&cli.global)),
        Command::Enqueue(command) => runtime()?.block_on(bus_cmd::enqueue(&cli.global, command)),
        Command::Messages(command) => runtime()?.block_on(bus_cmd::messages(&cli.global, command)),
        Command::Dlq(command) => runtime()?.block_on(bus_cmd::dlq(&cli.global, command)),
        Command::Events(command) => runtime()?.block_on(bus_cmd::events(&cli.global, command)),
        Command::Agents => runtime()?.block_on(bus_cmd::agents(&cli.global)),
        Command::Secrets(command) => runtime()?.block_on(secrets_cmd::run(&cli.global, command)),
        Command::Tokens(command) => runtime()?.block_on(secrets_cmd::tokens(&cli.global, command)),
        Command::Trace { trace_id, json } => runtime()?.block_on(bus_cmd::trace(&cli.global, &trace_id, json)),
        Command::Up(command) => runtime()?.block_on(node::up(&cli.global, command)),
        Command::Serve(command) => runtime()?.block_on(node::serve(&cli.global, command)),
        Command::Worker(command) => runtime()?.block_on(node::worker(&cli.global, command)),
        Command::Mcp(command) => runtime()?.block_on(mcp_cmd::run(&cli.global, command)),
        Command::Bench(command) => runtime()?.block_on(bench::run(&cli.global, command)),
        Command::Index(command) => runtime()?.block_on(knowledge_cmd::index(&cli.global, command)),
        Command::Search(command) => runtime()?.block_on(knowledge_cmd::search(&cli.global, command)),
        Command::Graph(command) => runtime()?.block_on(knowledge_cmd::graph(&cli.global, command)),
        Command::Eval(command) => runtime()?.block_on(knowledge_cmd::eval(&cli.global, command)),
        Command::Run(args) => runtime()?.block_on(goal_cmd::run(&cli.global, args)),
        Command::Gate(args::GateCommand::Unified(args)) => runtime()?.block_on(gate::unified(&cli.global, args)),
        Command::Gate(args::GateCommand::Chaos(args)) => runtime()?.block_on(gate::chaos::run(&cli.global, args)),
        Command::Goals(command) => runtime()?.block_on(goal_cmd::goals(&cli.global, command)),
        Command::Replay { trace_id, json } => runtime()?.block_on(goal_cmd::replay(&cli.global, &trace_id, json)),
        Command::Llm(command) => runtime()?.block_on(llm_cmd::run(&cli.global, command)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
