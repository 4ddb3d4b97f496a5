//! `kopd cursors`: fetches `/kopd/cursors` from a running kopd and prints it as a table.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// One GET against the admin API; returns the JSON body of a 200 response.
pub fn get(admin: &str, path: &str) -> anyhow::Result<Value> {
    let mut stream =
        TcpStream::connect(admin).map_err(|e| anyhow::anyhow!("cannot reach the admin API at {admin}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.take(64 << 20).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow::anyhow!("malformed HTTP response"))?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        anyhow::bail!("{path}: HTTP {status}: {body}");
    }
    Ok(serde_json::from_str(body)?)
}

pub fn print_cursors(admin: &str, topic: Option<String>, group: Option<String>) -> anyhow::Result<()> {
    let rows = get(admin, "/kopd/cursors")?;
    let rows = rows.as_array().cloned().unwrap_or_default();
    let text = |r: &Value, k: &str| match &r[k] {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let mut table = vec![
        [
            "GROUP",
            "TOPIC",
            "PARTITION",
            "COMMITTED-OFFSET",
            "LOG-END-OFFSET",
            "BACKLOG",
            "MARK-DELETE",
            "READ-POSITION",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in rows.iter().filter(|r| {
        topic.as_deref().is_none_or(|t| r["topic"] == t) && group.as_deref().is_none_or(|g| r["group"] == g)
    }) {
        table.push(
            [
                "group",
                "topic",
                "partition",
                "committedOffset",
                "logEndOffset",
                "backlog",
                "markDeletePosition",
                "readPosition",
            ]
            .iter()
            .map(|k| text(r, k))
            .collect(),
        );
    }
    table[1..].sort();
    let widths: Vec<usize> = (0..table[0].len()).map(|i| table.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    for row in &table {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
    Ok(())
}
