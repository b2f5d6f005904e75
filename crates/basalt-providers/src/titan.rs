//! Amazon Titan Text (`inputText` + `textGenerationConfig`).

use basalt_engine::{ChatTurn, SamplingParams, StopReason};
use basalt_proto::{from_json, BedrockError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{limits, Completion, ParsedText, Prompt, PromptUsage, TextInvocation, TextResponder};

/// Longest `inputText`, in characters.
pub const MAX_INPUT_CHARS: usize = 50_000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    input_text: Option<String>,
    text_generation_config: Option<Config>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Config {
    max_token_count: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stop_sequences: Option<Vec<String>>,
}

pub fn parse(body: &[u8]) -> Result<ParsedText, BedrockError> {
    let b: Body = from_json(body)?;
    let input = b
        .input_text
        .ok_or_else(|| BedrockError::missing("inputText"))?;
    if input.chars().count() > MAX_INPUT_CHARS {
        return Err(BedrockError::validation(format!(
            "inputText: at most {MAX_INPUT_CHARS} characters are allowed."
        )));
    }
    let c = b.text_generation_config.unwrap_or_default();
    let sampling = SamplingParams {
        temperature: limits::unit_interval("textGenerationConfig.temperature", c.temperature)?
            .unwrap_or(0.7),
        top_p: limits::unit_interval("textGenerationConfig.topP", c.top_p)?.unwrap_or(0.9),
        ..SamplingParams::default()
    };
    // Titan is an instruction model: its input is the user's turn.
    Ok((
        TextInvocation {
            prompt: Prompt::Chat(vec![ChatTurn::new("user", input)]),
            max_tokens: limits::max_tokens(
                "textGenerationConfig.maxTokenCount",
                c.max_token_count,
                512,
            )?,
            stop_sequences: limits::stop_sequences(
                "textGenerationConfig.stopSequences",
                c.stop_sequences,
            )?,
            sampling,
            output: crate::OutputMode::Text,
        },
        Box::new(Responder),
    ))
}

/// Live Titan responses say `FINISH` (the documentation's `FINISHED` is not what clients see).
fn completion_reason(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::EndOfTurn | StopReason::GrammarComplete => "FINISH",
        StopReason::StopSequence(_) => "STOP_CRITERIA_MET",
        StopReason::MaxTokens | StopReason::ContextWindow => "LENGTH",
    }
}

struct Responder;

impl TextResponder for Responder {
    fn response(&self, done: &Completion) -> Value {
        json!({
            "inputTextTokenCount": done.input_tokens,
            "results": [{
                "tokenCount": done.output_tokens,
                "outputText": done.text,
                "completionReason": completion_reason(&done.stop_reason),
            }],
        })
    }
    fn stream_start(&mut self, _prompt: &PromptUsage) -> Vec<Value> {
        Vec::new()
    }
    fn stream_delta(&mut self, text: &str) -> Vec<Value> {
        vec![
            json!({"outputText": text, "index": 0, "totalOutputTextTokenCount": null, "completionReason": null, "inputTextTokenCount": null}),
        ]
    }
    fn stream_end(&mut self, done: &Completion) -> Vec<Value> {
        vec![json!({
            "outputText": "", "index": 0,
            "totalOutputTextTokenCount": done.output_tokens,
            "completionReason": completion_reason(&done.stop_reason),
            "inputTextTokenCount": done.input_tokens,
        })]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_body_parses_with_its_config() {
        let (inv, r) = parse(br#"{"inputText":"Hi","textGenerationConfig":{"maxTokenCount":512,"temperature":0.7,"topP":0.9,"stopSequences":[]}}"#).expect("parse");
        assert_eq!(inv.max_tokens, 512);
        assert!(inv.stop_sequences.is_empty());
        let done = Completion {
            text: "Red".into(),
            stop_reason: StopReason::EndOfTurn,
            input_tokens: 3,
            output_tokens: 1,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            latency_ms: 1,
            first_byte_ms: 1,
        };
        let v = r.response(&done);
        assert_eq!(v["results"][0]["outputText"], "Red");
        assert_eq!(v["results"][0]["completionReason"], "FINISH");
        assert_eq!(v["inputTextTokenCount"], 3);
    }

    #[test]
    fn input_text_is_required_and_config_is_checked() {
        assert!(parse(b"{}")
            .err()
            .expect("missing")
            .message
            .contains("inputText"));
        let e = parse(br#"{"inputText":"x","textGenerationConfig":{"topP":2}}"#)
            .err()
            .expect("range");
        assert!(
            e.message.contains("textGenerationConfig.topP"),
            "{}",
            e.message
        );
    }
}
