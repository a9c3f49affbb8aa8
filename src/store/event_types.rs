//! Custom event types' changes through the writer: registering one, with
//! its audit row. Their SQL and rows are in `events.rs`.

use super::StoreError;
use super::audit::{self, Actor, AuditAction};
use super::events::{self, EventType};
use super::writer::{Tx, WriteOp, WriterHandle};

impl WriterHandle {
    pub fn create_event_type(
        &self,
        event_type: EventType,
        actor: Actor,
    ) -> Result<bool, StoreError> {
        self.call(|reply| WriteOp::CreateEventType {
            event_type,
            actor,
            reply,
        })
    }
}

/// Registers the type; false (nothing written) if its name is taken.
pub(super) fn apply_create(
    tx: &mut Tx<'_>,
    event_type: &EventType,
    actor: &Actor,
) -> Result<bool, StoreError> {
    let created = events::insert_event_type(tx.conn, event_type)?;
    if created {
        let summary = format!(
            "created event type{}",
            if event_type.schema.is_some() {
                " with a schema"
            } else {
                " without a schema"
            }
        );
        audit::record(
            tx.conn,
            actor,
            AuditAction::EventTypeCreated,
            Some(&event_type.name),
            &summary,
            tx.now,
        )?;
    }
    Ok(created)
}
