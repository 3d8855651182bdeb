//! The reply-side channel calls beyond `send`/`edit`: an edit in a chosen
//! format, native drafts, typing and read receipts (contract 0.2.0). Kept
//! apart from the runner's lifecycle code; used by
//! [`reply`](crate::channels::reply).

use std::sync::atomic::Ordering;

use super::ChannelRunner;
use crate::channels::ChannelError;
use crate::plugins::bindings::{ChatTarget, TextFormat};
use crate::plugins::{CallError, Instance};

/// Which reply-side call to make.
enum Op {
    Edit {
        conversation: String,
        message_id: String,
        text: String,
        format: TextFormat,
    },
    Draft {
        target: ChatTarget,
        draft_id: u64,
        text: String,
    },
    Typing(ChatTarget),
    MarkRead(ChatTarget),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Edit { .. } => "edit",
            Op::Draft { .. } => "draft",
            Op::Typing(_) => "typing",
            Op::MarkRead(_) => "mark-read",
        }
    }

    async fn run(&self, inst: &mut Instance) -> Result<(), CallError> {
        match self {
            Op::Edit {
                conversation,
                message_id,
                text,
                format,
            } => inst.edit(conversation, message_id, text, *format).await,
            Op::Draft {
                target,
                draft_id,
                text,
            } => inst.draft(target, *draft_id, text).await,
            Op::Typing(t) => inst.typing(t).await,
            Op::MarkRead(t) => inst.mark_read(t).await,
        }
    }
}

impl ChannelRunner {
    /// Edit a message sent earlier, in `format` (a `formatting` error means
    /// "resend as plain").
    pub async fn edit_as(
        &self,
        conversation: &str,
        message_id: &str,
        text: &str,
        format: TextFormat,
    ) -> Result<(), ChannelError> {
        self.op(Op::Edit {
            conversation: conversation.to_string(),
            message_id: message_id.to_string(),
            text: text.to_string(),
            format,
        })
        .await?;
        self.last_outbound_at.store(self.now(), Ordering::Relaxed);
        Ok(())
    }

    /// Show or update native draft `draft_id` in a direct chat.
    pub async fn draft(
        &self,
        target: &ChatTarget,
        draft_id: u64,
        text: &str,
    ) -> Result<(), ChannelError> {
        self.op(Op::Draft {
            target: target.clone(),
            draft_id,
            text: text.to_string(),
        })
        .await
    }

    /// Show a typing indicator. A failure is logged at debug only: typing
    /// never matters to the reply.
    pub async fn typing(&self, target: &ChatTarget) -> Result<(), ChannelError> {
        self.op(Op::Typing(target.clone())).await
    }

    /// Mark the inbound message `target.message_id` (and earlier ones) read.
    pub async fn mark_read(&self, target: &ChatTarget) -> Result<(), ChannelError> {
        self.op(Op::MarkRead(target.clone())).await
    }

    async fn op(&self, op: Op) -> Result<(), ChannelError> {
        self.accepting()?;
        let inst = self.checkout().await?;
        let name = op.name();
        let (inst, r) = self
            .registry
            .run_call(name, async move {
                let mut inst = inst;
                let r = op.run(&mut inst).await;
                (inst, r)
            })
            .await
            .map_err(|e| self.call_err(e))?;
        let failed = r.as_ref().is_err_and(CallError::poisons_instance);
        self.registry.record_call(&self.name, failed);
        if let Err(e) = &r {
            // The reply path decides what a failure means (fallbacks,
            // plain resends) and logs it there.
            tracing::debug!(channel = %self.name, call = name, error = %e, "channel call failed");
        }
        self.checkin(inst);
        r.map_err(|e| self.call_err(e))
    }
}
