//! `esim-notify keys add|list|revoke` (SPEC §2): the shop's API keys.
//! `add` prints the key once, on its own line, so a script can take it
//! with `tail -n1`; nothing can show it again.

use super::commands::{print_json, print_table};
use super::operator::{OpError, Operator};
use super::{KeysCommand, OK};
use crate::api_keys::KeyRequest;

pub async fn run(op: &Operator, command: KeysCommand) -> Result<u8, OpError> {
    let at =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match command {
        KeysCommand::Add {
            name,
            scopes,
            networks,
            json,
        } => {
            let request = KeyRequest {
                name,
                scopes,
                networks,
            };
            // Refused before anything is opened remotely, with the reason
            // the admin API would give (exit 2).
            request.validate().map_err(OpError::Rejected)?;
            let new = op.add_key(request).await?;
            if json {
                print_json(&new);
            } else {
                let s = &new.summary;
                let scopes: Vec<&str> = s.scopes.iter().map(|s| s.as_str()).collect();
                println!(
                    "Created API key `{}` (scopes: {}; networks: {}).",
                    s.name,
                    scopes.join(", "),
                    if s.networks.is_empty() {
                        "any".to_string()
                    } else {
                        s.networks.join(", ")
                    }
                );
                println!("Copy it now: it is not shown again and only its hash is stored.");
                println!("{}", new.key);
            }
            Ok(OK)
        }
        KeysCommand::List { json } => {
            let keys = op.keys().await?;
            if json {
                print_json(&keys);
            } else if keys.is_empty() {
                println!("No API keys.");
            } else {
                print_table(
                    &["NAME", "SCOPES", "NETWORKS", "CREATED", "LAST USED"],
                    keys.iter()
                        .map(|k| {
                            vec![
                                k.name.clone(),
                                k.scopes
                                    .iter()
                                    .map(|s| s.as_str())
                                    .collect::<Vec<_>>()
                                    .join(","),
                                if k.networks.is_empty() {
                                    "any".into()
                                } else {
                                    k.networks.join(",")
                                },
                                at(k.created),
                                k.last_used.map(at).unwrap_or_else(|| "never".into()),
                            ]
                        })
                        .collect(),
                );
            }
            Ok(OK)
        }
        KeysCommand::Revoke { name } => {
            op.revoke_key(&name).await?;
            println!("Revoked API key `{name}`: refused from the next request on.");
            Ok(OK)
        }
    }
}
