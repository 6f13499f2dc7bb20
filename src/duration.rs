//! Durations written the way Kubernetes users write them: 72h, 90m, 1h30m, 30s.

use std::time::Duration;

pub fn parse(text: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut number = String::new();
    if text.is_empty() {
        return None;
    }
    for c in text.chars() {
        match c {
            '0'..='9' | '.' => number.push(c),
            'h' | 'm' | 's' => {
                let value: f64 = number.parse().ok()?;
                number.clear();
                total += value * match c {
                    'h' => 3600.0,
                    'm' => 60.0,
                    _ => 1.0,
                };
            }
            _ => return None,
        }
    }
    if !number.is_empty() {
        return None;
    }
    Some(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_style_durations() {
        assert_eq!(parse("72h"), Some(Duration::from_secs(72 * 3600)));
        assert_eq!(parse("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("30"), None);
        assert_eq!(parse("3d"), None);
        assert_eq!(parse(""), None);
    }
}
