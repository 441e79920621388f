//! `--groups`: a list of port groups, and the ports it names.

use crate::group::{GroupId, Layout, Plane, Role};

/// A list of port groups.
#[derive(Clone, Debug)]
pub struct Groups(pub Vec<GroupId>);

/// Parses a number, a range or a list, e.g. `14`, `0-9`, `0,3,10-19`.
pub(super) fn parse_groups(text: &str) -> Result<Groups, String> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("{t:?} is not a group number"))
        };
        let (a, b) = (num(a)?, num(b)?);
        if a > b {
            return Err(format!("range {part} runs backwards"));
        }
        for n in a..=b {
            out.push(GroupId::try_from(n).map_err(|e| e.to_string())?);
        }
    }
    Ok(Groups(out))
}

/// Ports of `group`'s used pairs moved by `offset`: (role, media port).
pub(super) fn offset_ports(
    groups: &Groups,
    layout: Layout,
    offset: i32,
) -> Result<Vec<(Role, u16)>, String> {
    let mut out = Vec::new();
    for g in &groups.0 {
        for (pair, role) in layout.pairs() {
            let port = i32::from(g.port(pair, Plane::Rtp)) + offset;
            if !(1..=65534).contains(&port) {
                return Err(format!(
                    "--port-offset {offset} moves group {g} to port {port}, outside 1–65534"
                ));
            }
            out.push((role, port as u16));
        }
    }
    Ok(out)
}
