//! `mfa-recall-sim`: one provider simulator on a loopback port, for the demo and benchmarks.
//! Seed it, set limits and faults, and read its state through `/_sim/...` (see `simulator`).

use std::net::SocketAddr;

use clap::Parser;
use idp_sim::{self as simulator, RateLimits, Seed, Simulator};

#[derive(Parser)]
#[command(about = "Serve a simulated identity provider on loopback")]
struct Args {
    /// okta, entra, auth0, google or duo.
    #[arg(long)]
    provider: String,
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// JSON file with the credentials the simulator accepts, with the same keys as the
    /// IdentityBackend's Secret (for example {"api-token": "..."} for Okta).
    #[arg(long)]
    credentials: std::path::PathBuf,
    /// Users to seed (each with TOTP, WebAuthn and recovery codes, and one session).
    #[arg(long, default_value_t = 0)]
    users: u32,
    /// Requests per minute per rate-limit bucket; 0 means unlimited.
    #[arg(long, default_value_t = 0)]
    per_minute: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        return Err("simulators only listen on loopback (127.0.0.0/8 or ::1)".into());
    }
    let credentials: serde_json::Value = serde_json::from_slice(&std::fs::read(&args.credentials)?)?;
    let provider = simulator::build(&args.provider, &credentials)?;
    if args.users > 0 {
        provider.seed(&Seed { users: args.users, ..Seed::default() });
    }
    let sim = Simulator::new(provider);
    if args.per_minute > 0 {
        sim.set_limits(RateLimits { window_seconds: 60, default: Some(args.per_minute), ..RateLimits::default() });
    }
    let running = simulator::serve(sim, args.listen).await?;
    println!("{}", running.url);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
