//! `clock`: tells the agent the current time.

use pincer_sdk::{Error, Tool, ToolInfo, clock};
use serde_json::{Value, json};

struct Clock;

impl Tool for Clock {
    fn name() -> String {
        "clock".into()
    }

    fn describe() -> ToolInfo {
        pincer_sdk::tool_info(
            "clock",
            "Returns the current date and time (ISO 8601) and Unix milliseconds, in UTC or at a given offset from UTC in minutes.",
            r#"{"type":"object","properties":{"utc_offset_minutes":{"type":"integer","minimum":-1440,"maximum":1440}},"additionalProperties":false}"#,
        )
    }

    fn invoke(args: Value) -> Result<Value, Error> {
        let offset = match args.get("utc_offset_minutes") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_i64()
                .filter(|m| (-1440..=1440).contains(m))
                .ok_or_else(|| {
                    Error::permanent("utc_offset_minutes must be an integer in -1440..=1440")
                })?,
        };
        let now = clock::now_ms();
        Ok(json!({
            "unix_ms": now,
            "iso8601": iso8601(now as i64 + offset * 60_000, offset),
            "utc_offset_minutes": offset,
        }))
    }
}

/// Format local milliseconds as `YYYY-MM-DDTHH:MM:SS.mmm±HH:MM`.
fn iso8601(local_ms: i64, offset_min: i64) -> String {
    let days = local_ms.div_euclid(86_400_000);
    let ms_of_day = local_ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s, ms) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    let sign = if offset_min < 0 { '-' } else { '+' };
    let o = offset_min.abs();
    format!(
        "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}{sign}{:02}:{:02}",
        o / 60,
        o % 60
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pincer_sdk::export_tool!(Clock);
