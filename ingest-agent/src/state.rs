//! Where a source's ingestion stands: the number of the last batch and the connector's
//! position (a database watermark, the next page of an API, the files landed). It lives in
//! the bronze table's Delta metadata and changes only in the commit that lands the rows it
//! covers, which is what makes a re-run after a crash land every row once.

use serde::{Deserialize, Serialize};

/// The Delta table property holding the state as JSON.
pub const STATE_PROPERTY: &str = "strata.ingest.state";

/// A source table's ingestion state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    /// The last committed batch (0: nothing landed yet).
    pub batch: i64,
    /// The connector's position after that batch (its own JSON shape).
    #[serde(default)]
    pub position: serde_json::Value,
}

impl SourceState {
    /// The state from a table's properties; the empty state when there is none.
    ///
    /// # Errors
    /// The property's text and why it is not a state (someone edited the table's
    /// properties).
    pub fn from_properties(
        properties: &std::collections::HashMap<String, String>,
    ) -> Result<SourceState, String> {
        match properties.get(STATE_PROPERTY) {
            None => Ok(SourceState::default()),
            Some(text) => serde_json::from_str(text)
                .map_err(|err| format!("table property {STATE_PROPERTY} is not valid: {err}")),
        }
    }

    /// The connector's position, typed; `None` before the first batch.
    ///
    /// # Errors
    /// The position does not have the connector's shape (the source changed connector).
    pub fn position_as<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>, String> {
        if self.position.is_null() {
            return Ok(None);
        }
        serde_json::from_value(self.position.clone())
            .map(Some)
            .map_err(|err| {
                format!(
                    "the landed position does not fit this connector ({err}); land the source again from scratch with --full-refresh"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_round_trips_through_the_table_properties() {
        let state = SourceState {
            batch: 7,
            position: serde_json::json!({"watermark": "2026-01-01"}),
        };
        let properties = std::collections::HashMap::from([(
            STATE_PROPERTY.to_string(),
            serde_json::to_string(&state).unwrap(),
        )]);
        assert_eq!(SourceState::from_properties(&properties).unwrap(), state);
        assert_eq!(
            SourceState::from_properties(&Default::default()).unwrap(),
            SourceState::default()
        );
        let broken =
            std::collections::HashMap::from([(STATE_PROPERTY.to_string(), "{".to_string())]);
        assert!(SourceState::from_properties(&broken).is_err());
    }
}
