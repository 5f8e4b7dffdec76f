//! Output of the admin commands: aligned tables for people, JSON for scripts.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    /// Aligned columns.
    #[default]
    Table,
    /// One JSON document (JSON Lines for `topic consume`).
    Json,
}

/// A titled table of strings.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub title: Option<String>,
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: Vec<&'static str>) -> Table {
        Table {
            title: None,
            headers,
            rows: Vec::new(),
        }
    }

    pub fn titled(mut self, title: impl Into<String>) -> Table {
        self.title = Some(title.into());
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Columns padded to their widest cell, two spaces apart; no trailing spaces.
    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        if let Some(title) = &self.title {
            out.push_str(title);
            out.push('\n');
        }
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&headers).chain(self.rows.iter()) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < columns {
                    line.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count()));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// What a command shows: tables for people and a JSON value for scripts, and whether it
/// fully succeeded (partial failures are listed in the output and make the exit code 1).
#[derive(Debug, Clone)]
pub struct Output {
    pub tables: Vec<Table>,
    pub json: Value,
    pub ok: bool,
}

impl Output {
    pub fn new(json: Value, tables: Vec<Table>) -> Output {
        Output {
            tables,
            json,
            ok: true,
        }
    }

    pub fn print(&self, format: Format) {
        match format {
            Format::Json => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&self.json).unwrap_or_default()
                )
            }
            Format::Table => {
                let rendered: Vec<String> = self.tables.iter().map(Table::render).collect();
                print!("{}", rendered.join("\n"));
            }
        }
    }
}

/// `-` for an empty cell.
pub fn cell_or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let mut table = Table::new(vec!["NAME", "PARTITIONS"]).titled("TOPICS");
        table.row(vec!["orders".into(), "3".into()]);
        table.row(vec!["a".into(), "12".into()]);
        assert_eq!(
            table.render(),
            "TOPICS\nNAME    PARTITIONS\norders  3\na       12\n"
        );
    }
}
