//! Chat markup of other model families, read back into turns.
//!
//! Llama and Mistral callers format their own prompts (`<|start_header_id|>`,
//! `[INST]`). The embedded model speaks another template and reads that markup as
//! noise, often answering with nothing. When a raw prompt is exactly one of these
//! well-known formats, its turns are re-rendered with the local model's own
//! template; anything else goes to the model as given.

use basalt_engine::ChatTurn;

use crate::{push_turn, Prompt};

/// Turns from a raw prompt, or the prompt unchanged.
pub fn read(prompt: &str) -> Prompt {
    llama3(prompt)
        .or_else(|| inst(prompt))
        .map_or_else(|| Prompt::Raw(prompt.to_string()), Prompt::Chat)
}

/// `<|begin_of_text|><|start_header_id|>ROLE<|end_header_id|>\n\nTEXT<|eot_id|>...`
fn llama3(prompt: &str) -> Option<Vec<ChatTurn>> {
    const HEADER: &str = "<|start_header_id|>";
    const END_HEADER: &str = "<|end_header_id|>";
    const EOT: &str = "<|eot_id|>";
    let body = prompt
        .trim_start()
        .strip_prefix("<|begin_of_text|>")
        .unwrap_or(prompt.trim_start());
    if !body.starts_with(HEADER) {
        return None;
    }
    let mut turns = Vec::new();
    for segment in body.split(HEADER).skip(1) {
        let (role, rest) = segment.split_once(END_HEADER)?;
        let role = match role.trim() {
            "system" => "system",
            "user" | "ipython" => "user",
            "assistant" => "assistant",
            _ => return None,
        };
        let text = rest.split(EOT).next().unwrap_or("").trim();
        push_turn(&mut turns, role, text);
    }
    finish(turns)
}

/// Mistral and Llama 2: `<s>[INST] (<<SYS>>\nSYSTEM\n<</SYS>>\n\n)? USER [/INST] ASSISTANT</s>...`
fn inst(prompt: &str) -> Option<Vec<ChatTurn>> {
    const OPEN: &str = "[INST]";
    const CLOSE: &str = "[/INST]";
    let body = prompt.trim();
    if !body
        .trim_start_matches("<s>")
        .trim_start()
        .starts_with(OPEN)
    {
        return None;
    }
    let mut turns = Vec::new();
    for segment in body.split(OPEN).skip(1) {
        let (user, answer) = segment.split_once(CLOSE)?;
        let mut user = user.trim();
        if let Some(rest) = user.strip_prefix("<<SYS>>") {
            let (system, after) = rest.split_once("<</SYS>>")?;
            push_turn(&mut turns, "system", system.trim());
            user = after.trim();
        }
        push_turn(&mut turns, "user", user);
        let answer = answer.replace("</s>", "").replace("<s>", "");
        if !answer.trim().is_empty() {
            push_turn(&mut turns, "assistant", answer.trim());
        }
    }
    finish(turns)
}

/// A conversation needs a user turn; a trailing empty assistant header is just the
/// opening of the reply.
fn finish(mut turns: Vec<ChatTurn>) -> Option<Vec<ChatTurn>> {
    if turns
        .last()
        .is_some_and(|t| t.role == "assistant" && t.content.is_empty())
    {
        turns.pop();
    }
    turns.iter().any(|t| t.role == "user").then_some(turns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_markup_becomes_turns() {
        let seed = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\nYou are a helpful assistant.<|eot_id|>\n<|start_header_id|>user<|end_header_id|>\nWhat is Amazon S3?<|eot_id|>\n<|start_header_id|>assistant<|end_header_id|>\n";
        assert_eq!(
            read(seed),
            Prompt::Chat(vec![
                ChatTurn::new("system", "You are a helpful assistant."),
                ChatTurn::new("user", "What is Amazon S3?")
            ])
        );
    }

    #[test]
    fn mistral_and_llama2_markup_becomes_turns() {
        assert_eq!(
            read("<s>[INST] What is Amazon S3? [/INST]"),
            Prompt::Chat(vec![ChatTurn::new("user", "What is Amazon S3?")])
        );
        assert_eq!(
            read("<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello!</s><s>[INST] Bye [/INST]"),
            Prompt::Chat(vec![
                ChatTurn::new("system", "Be brief."),
                ChatTurn::new("user", "Hi"),
                ChatTurn::new("assistant", "Hello!"),
                ChatTurn::new("user", "Bye"),
            ])
        );
    }

    #[test]
    fn anything_else_goes_as_given() {
        for p in [
            "Once upon a time",
            "[INST] unterminated",
            "<|start_header_id|>robot<|end_header_id|>x",
        ] {
            assert_eq!(read(p), Prompt::Raw(p.to_string()), "{p}");
        }
    }
}
