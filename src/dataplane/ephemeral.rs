//! Which ports the kernel may hand out on its own (an unbound socket's
//! first send, a bind to port 0): `net.ipv4.ip_local_port_range` less
//! `net.ipv4.ip_local_reserved_ports`. A fast-path port that holds no socket
//! (docs/forwarding.md, "Ports without sockets") must not be one of them,
//! else another process's socket could be given its number; such a port
//! keeps its socket. Pure, but for [`EphemeralPorts::read`].

/// The kernel's automatic port assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EphemeralPorts {
    /// `ip_local_port_range`, inclusive.
    range: (u16, u16),
    /// `ip_local_reserved_ports`, inclusive ranges.
    reserved: Vec<(u16, u16)>,
}

impl EphemeralPorts {
    /// Parses the two sysctls' text (`"32768\t60999"`, `"49152-65535,9870"`).
    pub fn parse(range: &str, reserved: &str) -> Result<EphemeralPorts, String> {
        let number = |s: &str| {
            s.trim()
                .parse::<u16>()
                .map_err(|e| format!("{s:?} is not a port ({e})"))
        };
        let mut bounds = range.split_whitespace();
        let (Some(lo), Some(hi), None) = (bounds.next(), bounds.next(), bounds.next()) else {
            return Err(format!("{range:?} is not a port range"));
        };
        let reserved = reserved
            .trim()
            .split(',')
            .filter(|part| !part.is_empty())
            .map(|part| match part.split_once('-') {
                Some((a, b)) => Ok((number(a)?, number(b)?)),
                None => number(part).map(|p| (p, p)),
            })
            .collect::<Result<_, _>>()?;
        Ok(EphemeralPorts {
            range: (number(lo)?, number(hi)?),
            reserved,
        })
    }

    /// Reads this network namespace's settings.
    pub fn read() -> Result<EphemeralPorts, String> {
        let read = |name: &str| {
            let path = format!("/proc/sys/net/ipv4/{name}");
            std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))
        };
        Self::parse(
            &read("ip_local_port_range")?,
            &read("ip_local_reserved_ports")?,
        )
    }

    /// Whether the kernel may give `port` to a socket that did not ask for it.
    pub fn may_assign(&self, port: u16) -> bool {
        (self.range.0..=self.range.1).contains(&port)
            && !self.reserved.iter().any(|&(a, b)| (a..=b).contains(&port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_less_the_reserved_ports() {
        let e = EphemeralPorts::parse("32768\t60999\n", "49152-60000,60010\n").unwrap();
        let may: Vec<bool> = [
            32767, 32768, 49151, 49152, 60000, 60001, 60010, 60999, 61000,
        ]
        .map(|p| e.may_assign(p))
        .to_vec();
        assert_eq!(
            may,
            [false, true, true, false, false, true, false, true, false]
        );
        let none = EphemeralPorts::parse("32768 60999", "\n").unwrap();
        assert!(none.may_assign(50000) && !none.may_assign(65535));
    }

    #[test]
    fn what_is_not_a_setting_is_refused_by_name() {
        let e = EphemeralPorts::parse("32768", "").unwrap_err();
        assert!(e.contains("\"32768\" is not a port range"), "{e}");
        let e = EphemeralPorts::parse("1 2", "5-x").unwrap_err();
        assert!(e.contains("\"x\" is not a port"), "{e}");
    }
}
