//! The `vswitch-cni` binary: reads the environment and stdin, runs the command, prints its
//! result or the CNI error object on stdout and exits 0 or 1.

use std::io::{Read, Write};

fn main() {
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => cni_plugin::run(|k| std::env::var(k).ok(), &stdin),
        Err(e) => {
            let err =
                cni_plugin::error::Error::Io(format!("reading the configuration on stdin: {e}"));
            cni_plugin::Outcome {
                stdout: Some(err.to_json(cni_plugin::config::PREFERRED_VERSION)),
                status: 1,
            }
        }
    };
    if let Some(v) = outcome.stdout {
        let mut out = std::io::stdout().lock();
        let written = serde_json::to_writer(&mut out, &v)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
            .and_then(|()| out.flush());
        if let Err(e) = written {
            eprintln!("vswitch-cni: writing the answer: {e}");
            std::process::exit(1);
        }
    }
    std::process::exit(outcome.status);
}
