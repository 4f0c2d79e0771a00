//! The final table.

/// How a figure is judged.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// Reported, not judged.
    Report,
    /// figure / reference must be at least this.
    RatioAtLeast(f64),
    /// figure / reference must be at most this (a cost against the
    /// reference's: CPU per request, a latency).
    RatioAtMost(f64),
    /// The figure must be at most this.
    AtMost(f64),
    /// The figure must be exactly this.
    Exactly(f64),
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// The scenario.
    pub scenario: String,
    /// What was measured.
    pub figure: String,
    /// The measured value.
    pub value: f64,
    /// Its unit (`req/s`, `ms`, `MB`, ...).
    pub unit: &'static str,
    /// The reference value and what it is.
    pub reference: Option<(f64, String)>,
    /// The target.
    pub target: Target,
}

impl Row {
    /// value / reference.
    pub fn ratio(&self) -> Option<f64> {
        self.reference
            .as_ref()
            .filter(|(r, _)| *r != 0.0)
            .map(|(r, _)| self.value / r)
    }

    /// Whether the target is met (`None` for reported figures).
    pub fn met(&self) -> Option<bool> {
        match self.target {
            Target::Report => None,
            Target::RatioAtLeast(min) => Some(self.ratio().is_some_and(|r| r >= min)),
            Target::RatioAtMost(max) => Some(self.ratio().is_some_and(|r| r <= max)),
            Target::AtMost(max) => Some(self.value <= max),
            Target::Exactly(v) => Some(self.value == v),
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::Report => "report".into(),
            Target::RatioAtLeast(min) => format!(">= {min}x"),
            Target::RatioAtMost(max) => format!("<= {max}x"),
            Target::AtMost(max) => format!("<= {} {}", number(max), self.unit),
            Target::Exactly(v) => format!("= {}", number(v)),
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count;
/// 0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// A number with sensible precision and thousands separators.
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return thousands(v as i64);
    }
    if v.abs() >= 1000.0 {
        thousands(v.round() as i64)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn thousands(v: i64) -> String {
    let digits = v.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// The table as Markdown.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | figure | measured | reference | ratio | target | met |\n|---|---|---:|---|---:|---|---|\n",
    );
    for row in rows {
        let reference = row.reference.as_ref().map_or("—".to_owned(), |(v, what)| {
            format!("{} {} ({what})", number(*v), row.unit)
        });
        let ratio = row.ratio().map_or("—".to_owned(), |r| format!("{r:.2}x"));
        let met = match row.met() {
            None => "—",
            Some(true) => "met",
            Some(false) => "**missed**",
        };
        out.push_str(&format!(
            "| {} | {} | {} {} | {} | {} | {} | {} |\n",
            row.scenario,
            row.figure,
            number(row.value),
            row.unit,
            reference,
            ratio,
            row.target_text(),
            met
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(51999.5), "52,000");
        assert_eq!(number(1234567.0), "1,234,567");
        assert_eq!(number(1.234), "1.23");
        assert_eq!(number(12.34), "12.3");
        assert_eq!(number(0.0), "0");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[109_447.0, 96_556.0]), 103_001.5);
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
    }

    #[test]
    fn targets_are_judged() {
        let row = Row {
            scenario: "s".into(),
            figure: "f".into(),
            value: 90.0,
            unit: "req/s",
            reference: Some((100.0, "ref".into())),
            target: Target::RatioAtLeast(0.9),
        };
        assert_eq!(row.met(), Some(true));
        let row = Row {
            target: Target::AtMost(2.0),
            value: 2.5,
            ..row
        };
        assert_eq!(row.met(), Some(false));
        // 1.6 / 1.0 is above 1.5x; 1.5 / 1.0 is not.
        let row = Row {
            target: Target::RatioAtMost(1.5),
            value: 1.6,
            reference: Some((1.0, "ref".into())),
            ..row
        };
        assert_eq!(row.met(), Some(false));
        assert_eq!(
            Row {
                value: 1.5,
                ..row.clone()
            }
            .met(),
            Some(true)
        );
        // No reference: not met.
        assert_eq!(
            Row {
                reference: None,
                ..row
            }
            .met(),
            Some(false)
        );
    }
}
