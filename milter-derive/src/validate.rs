//! Meaning: the parsed attribute tree becomes a [`Model`] of what to negotiate,
//! and every misuse becomes an error with the span of the offending tokens. This
//! is the pure "tokens to flags" step; nothing here depends on handler types,
//! which only the compiler can see (see [`expand`](crate::expand)).

use crate::parse::{Arg, Errors, Input, Shape};
use proc_macro2::Span;
use syn::{Ident, Lit, Member, Type};

/// A name users write and the `milter-core` constant it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flag {
    /// As written in the attribute: `add_header`.
    pub(crate) name: &'static str,
    /// The associated constant of `Actions` or `ProtocolOpts`: `ADD_HEADER`.
    pub(crate) constant: &'static str,
}

const fn flag(name: &'static str, constant: &'static str) -> Flag {
    Flag { name, constant }
}

/// The actions users may ask for, in `Actions` bit order. `SET_SYMBOL_LIST` is
/// not among them: `macros(…)` implies it.
pub(crate) const ACTIONS: [Flag; 8] = [
    flag("add_header", "ADD_HEADER"),
    flag("change_body", "CHANGE_BODY"),
    flag("add_rcpt", "ADD_RCPT"),
    flag("delete_rcpt", "DELETE_RCPT"),
    flag("change_header", "CHANGE_HEADER"),
    flag("quarantine", "QUARANTINE"),
    flag("change_from", "CHANGE_FROM"),
    flag("add_rcpt_with_args", "ADD_RCPT_WITH_ARGS"),
];

/// The capability options users may ask for. Skip and no-reply bits are not
/// among them: the handlers decide those.
pub(crate) const OPTIONS: [Flag; 3] = [
    flag("skip", "SKIP"),
    flag("rcpt_rej", "RCPT_REJ"),
    flag("header_leading_space", "HEADER_LEADING_SPACE"),
];

/// The stages a macro list may be given for, by wire index (`SMFIM_*`: end of
/// message is 5, end of headers 6).
pub(crate) const MACRO_STAGES: [&str; 7] =
    ["connect", "helo", "mail", "rcpt", "data", "eom", "eoh"];

/// The keys of the type's `#[milter(…)]` attribute.
const TYPE_KEYS: &str =
    "`actions(…)`, `optional_actions(…)`, `options(…)`, `optional_options(…)`, `macros(…)` or `crate = path`";

/// What the attributes ask for.
#[derive(Debug)]
pub(crate) struct Model {
    /// The type's name.
    pub(crate) ident: Ident,
    /// Its generics, copied to every impl.
    pub(crate) generics: syn::Generics,
    /// The path of the runtime crate: `::milter_blocking` unless `crate = …`
    /// says otherwise.
    pub(crate) krate: syn::Path,
    /// Required actions, in the order written.
    pub(crate) actions: Vec<Flag>,
    /// Actions used when offered.
    pub(crate) optional_actions: Vec<Flag>,
    /// Required capability options.
    pub(crate) options: Vec<Flag>,
    /// Capability options used when offered.
    pub(crate) optional_options: Vec<Flag>,
    /// Macro lists by wire index, normalised to names separated by one space.
    pub(crate) macros: [Option<String>; 7],
    /// Fields reset to their `Default` before each message.
    pub(crate) per_message: Vec<(Member, Type)>,
}

/// Gives the parsed input its meaning. Returns the model of everything valid and
/// the errors about the rest.
pub(crate) fn validate(input: Input) -> (Model, Option<syn::Error>) {
    let mut errors = Errors::default();
    let mut model = Model {
        ident: input.ident,
        generics: input.generics,
        krate: syn::parse_quote!(::milter_blocking),
        actions: Vec::new(),
        optional_actions: Vec::new(),
        options: Vec::new(),
        optional_options: Vec::new(),
        macros: Default::default(),
        per_message: Vec::new(),
    };

    match input.shape {
        Shape::Struct(fields) => {
            for field in fields {
                let mut per_message = None::<Span>;
                for arg in &field.args {
                    match arg {
                        Arg::Word(w) if w == "per_message" => {
                            if per_message.is_some() {
                                errors.at(w.span(), "duplicated `per_message`");
                            }
                            per_message = Some(w.span());
                        }
                        Arg::Call(n, _) | Arg::Assign(n, _) if n == "per_message" => {
                            errors.spanned(arg_tokens(arg), "`per_message` takes no value");
                        }
                        _ => {
                            let name = arg.name();
                            let hint = if is_type_key(name) {
                                format!(
                                    "`{name}(…)` goes in the attribute on the type, not on a field"
                                )
                            } else {
                                format!(
                                    "unknown field attribute `{name}`; the only one is \
                                     `#[milter(per_message)]`"
                                )
                            };
                            errors.at(name.span(), hint);
                        }
                    }
                }
                if per_message.is_some() {
                    model.per_message.push((field.member, field.ty));
                }
            }
        }
        Shape::Enum(span) => errors.at(
            span,
            "`#[derive(Milter)]` works on structs only: hold the per-connection state in a struct",
        ),
        Shape::Union(span) => errors.at(
            span,
            "`#[derive(Milter)]` works on structs only: hold the per-connection state in a struct",
        ),
    }

    let mut krate_seen = None::<Span>;
    for arg in &input.args {
        let name = arg.name();
        match name.to_string().as_str() {
            key @ ("actions" | "optional_actions") => {
                let (mine, other, other_key) = if key == "actions" {
                    (
                        &mut model.actions,
                        &model.optional_actions,
                        "optional_actions",
                    )
                } else {
                    (&mut model.optional_actions, &model.actions, "actions")
                };
                flag_list(
                    arg,
                    key,
                    "action",
                    &ACTIONS,
                    mine,
                    other,
                    other_key,
                    &mut errors,
                );
            }
            key @ ("options" | "optional_options") => {
                let (mine, other, other_key) = if key == "options" {
                    (
                        &mut model.options,
                        &model.optional_options,
                        "optional_options",
                    )
                } else {
                    (&mut model.optional_options, &model.options, "options")
                };
                flag_list(
                    arg,
                    key,
                    "option",
                    &OPTIONS,
                    mine,
                    other,
                    other_key,
                    &mut errors,
                );
            }
            "macros" => macro_lists(arg, &mut model.macros, &mut errors),
            "crate" => match (arg, krate_seen) {
                (Arg::Crate(_, path), None) => {
                    model.krate = path.clone();
                    krate_seen = Some(name.span());
                }
                (Arg::Crate(..), Some(_)) => errors.at(name.span(), "duplicated `crate = …`"),
                _ => errors.spanned(arg_tokens(arg), "expected `crate = path`"),
            },
            "per_message" => errors.at(
                name.span(),
                "`per_message` goes on a field: `#[milter(per_message)] field: Type`",
            ),
            _ => errors.at(
                name.span(),
                format!("unknown `milter` attribute `{name}`; expected {TYPE_KEYS}"),
            ),
        }
    }

    (model, errors.finish())
}

fn is_type_key(name: &Ident) -> bool {
    [
        "actions",
        "optional_actions",
        "options",
        "optional_options",
        "macros",
    ]
    .iter()
    .any(|k| name == k)
}

/// The tokens of an argument, for an error spanning all of it.
fn arg_tokens(arg: &Arg) -> proc_macro2::TokenStream {
    let mut out = proc_macro2::TokenStream::new();
    match arg {
        Arg::Word(n) => quote::ToTokens::to_tokens(n, &mut out),
        Arg::Call(n, args) => {
            quote::ToTokens::to_tokens(n, &mut out);
            for a in args {
                out.extend(arg_tokens(a));
            }
        }
        Arg::Assign(n, lit) => {
            quote::ToTokens::to_tokens(n, &mut out);
            quote::ToTokens::to_tokens(lit, &mut out);
        }
        Arg::Crate(n, path) => {
            quote::ToTokens::to_tokens(n, &mut out);
            quote::ToTokens::to_tokens(path, &mut out);
        }
    }
    out
}

/// `key(name, …)`: each name must be in `table` and listed once across `key`
/// and `other_key`.
#[allow(clippy::too_many_arguments)]
fn flag_list(
    arg: &Arg,
    key: &str,
    what: &str,
    table: &[Flag],
    mine: &mut Vec<Flag>,
    other: &[Flag],
    other_key: &str,
    errors: &mut Errors,
) {
    let names = table.iter().map(|f| f.name).collect::<Vec<_>>().join(", ");
    let Arg::Call(_, items) = arg else {
        errors.spanned(
            arg_tokens(arg),
            format!("expected `{key}(name, …)` with {what}s among {names}"),
        );
        return;
    };
    for item in items {
        let Arg::Word(word) = item else {
            errors.spanned(
                arg_tokens(item),
                format!("expected {what} names only, among {names}"),
            );
            continue;
        };
        let written = word.to_string();
        let Some(flag) = table.iter().find(|f| f.name == written) else {
            let message = if let Some(f) = table.iter().find(|f| f.name == written.to_lowercase()) {
                format!(
                    "unknown {what} `{written}`; {what}s are written in lower case: `{}`",
                    f.name
                )
            } else if what == "action" && written.eq_ignore_ascii_case("set_symbol_list") {
                "`set_symbol_list` is not written: `macros(…)` asks for it".to_string()
            } else if what == "option" && written.to_lowercase().starts_with("n") {
                format!(
                    "unknown option `{written}`; stages to skip and stages without a reply are \
                     worked out from the handlers; options are {names}"
                )
            } else {
                format!("unknown {what} `{written}`; expected one of {names}")
            };
            errors.at(word.span(), message);
            continue;
        };
        if mine.contains(flag) {
            errors.at(word.span(), format!("duplicated {what} `{written}`"));
        } else if other.contains(flag) {
            errors.at(
                word.span(),
                format!("{what} `{written}` is already listed in `{other_key}(…)`"),
            );
        } else {
            mine.push(*flag);
        }
    }
}

/// `macros(stage = "names", …)`.
fn macro_lists(arg: &Arg, macros: &mut [Option<String>; 7], errors: &mut Errors) {
    let stages = MACRO_STAGES.join(", ");
    let Arg::Call(_, items) = arg else {
        errors.spanned(
            arg_tokens(arg),
            "expected `macros(stage = \"names\", …)`, e.g. `macros(connect = \"{j} {daemon_name}\")`",
        );
        return;
    };
    for item in items {
        let Arg::Assign(stage, value) = item else {
            errors.spanned(
                arg_tokens(item),
                format!(
                    "expected `stage = \"names\"`, e.g. `mail = \"{{i}} {{auth_authen}}\"`, with \
                     the stage among {stages}"
                ),
            );
            continue;
        };
        let stage_name = stage.to_string();
        let Some(index) = MACRO_STAGES.iter().position(|s| *s == stage_name) else {
            let hint = match stage_name.as_str() {
                "header" | "headers" => "; header handlers see the `eoh` macros",
                "body" => "; body handlers see the `eom` macros",
                _ => "",
            };
            errors.at(
                stage.span(),
                format!("unknown macro stage `{stage_name}`; expected one of {stages}{hint}"),
            );
            continue;
        };
        let Lit::Str(list) = value else {
            errors.at(
                value.span(),
                "expected a string of macro names separated by spaces, e.g. \"{i} {auth_authen}\"",
            );
            continue;
        };
        match macro_list(&list.value()) {
            Ok(normalised) => {
                if macros[index].is_some() {
                    errors.at(
                        stage.span(),
                        format!("macros for `{stage_name}` are already given"),
                    );
                } else {
                    macros[index] = Some(normalised);
                }
            }
            Err(problem) => errors.at(list.span(), format!("{problem} for `{stage_name}`")),
        }
    }
}

/// Checks a space-separated list of macro names and joins them with single spaces.
pub(crate) fn macro_list(list: &str) -> Result<String, String> {
    let names: Vec<&str> = list.split_ascii_whitespace().collect();
    if names.is_empty() {
        return Err(
            "empty macro list: name at least one macro (e.g. \"{i}\"), or leave the stage out"
                .to_string(),
        );
    }
    let mut seen: Vec<&str> = Vec::new();
    for name in &names {
        let bare = if let Some(inner) = name.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            inner
        } else {
            name
        };
        let valid = if bare.len() == name.len() {
            bare.len() == 1
        } else {
            !bare.is_empty()
        } && bare.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!(
                "invalid macro name `{name}` (write a one-character name like `i` or a name in \
                 braces like `{{daemon_name}}`, separated by spaces)"
            ));
        }
        if seen.contains(&bare) {
            return Err(format!("macro `{name}` listed twice"));
        }
        seen.push(bare);
    }
    Ok(names.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn model(tokens: proc_macro2::TokenStream) -> (Model, Vec<String>) {
        let (input, parse_errors) = crate::parse::parse(syn::parse2(tokens).unwrap());
        assert!(parse_errors.is_none(), "{parse_errors:?}");
        let (model, errors) = validate(input);
        let messages = errors
            .map(|e| e.into_iter().map(|e| e.to_string()).collect())
            .unwrap_or_default();
        (model, messages)
    }

    fn constants(flags: &[Flag]) -> Vec<&'static str> {
        flags.iter().map(|f| f.constant).collect()
    }

    #[test]
    fn maps_every_action_name_to_its_constant() {
        let (m, errors) = model(quote! {
            #[milter(actions(add_header, change_body, add_rcpt, delete_rcpt))]
            #[milter(optional_actions(change_header, quarantine, change_from, add_rcpt_with_args))]
            struct S;
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            constants(&m.actions),
            ["ADD_HEADER", "CHANGE_BODY", "ADD_RCPT", "DELETE_RCPT"]
        );
        assert_eq!(
            constants(&m.optional_actions),
            [
                "CHANGE_HEADER",
                "QUARANTINE",
                "CHANGE_FROM",
                "ADD_RCPT_WITH_ARGS"
            ]
        );
    }

    #[test]
    fn maps_options() {
        let (m, errors) = model(quote! {
            #[milter(options(skip, rcpt_rej), optional_options(header_leading_space))]
            struct S;
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(constants(&m.options), ["SKIP", "RCPT_REJ"]);
        assert_eq!(constants(&m.optional_options), ["HEADER_LEADING_SPACE"]);
    }

    #[test]
    fn puts_macro_lists_at_their_wire_index() {
        let (m, errors) = model(quote! {
            #[milter(macros(connect = "{j}  {daemon_name}", eoh = "i", eom = "{i} {msg_id}"))]
            struct S;
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(m.macros[0].as_deref(), Some("{j} {daemon_name}"));
        assert_eq!(m.macros[5].as_deref(), Some("{i} {msg_id}"));
        assert_eq!(m.macros[6].as_deref(), Some("i"));
        assert!(m.macros[1..5].iter().all(Option::is_none));
    }

    #[test]
    fn collects_per_message_fields() {
        let (m, errors) = model(quote! {
            struct S { a: u8, #[milter(per_message)] b: Vec<u8>, #[milter(per_message)] c: bool }
        });
        assert!(errors.is_empty(), "{errors:?}");
        let names: Vec<_> = m
            .per_message
            .iter()
            .map(|(member, _)| quote!(#member).to_string())
            .collect();
        assert_eq!(names, ["b", "c"]);
    }

    #[test]
    fn reports_every_mistake() {
        let (m, errors) = model(quote! {
            #[milter(actions(add_header, add_header, ADD_RCPT, frobnicate, set_symbol_list))]
            #[milter(optional_actions(add_header), options(no_helo), colour(red))]
            #[milter(macros(header = "{i}", mail = "", rcpt = "{rcpt", data = "i i", eom = 3))]
            struct S { #[milter(per_message, reset)] a: u8 }
        });
        assert_eq!(
            errors,
            [
                "unknown field attribute `reset`; the only one is `#[milter(per_message)]`",
                "duplicated action `add_header`",
                "unknown action `ADD_RCPT`; actions are written in lower case: `add_rcpt`",
                "unknown action `frobnicate`; expected one of add_header, change_body, add_rcpt, \
                 delete_rcpt, change_header, quarantine, change_from, add_rcpt_with_args",
                "`set_symbol_list` is not written: `macros(…)` asks for it",
                "action `add_header` is already listed in `actions(…)`",
                "unknown option `no_helo`; stages to skip and stages without a reply are worked \
                 out from the handlers; options are skip, rcpt_rej, header_leading_space",
                "unknown `milter` attribute `colour`; expected `actions(…)`, \
                 `optional_actions(…)`, `options(…)`, `optional_options(…)`, `macros(…)` or \
                 `crate = path`",
                "unknown macro stage `header`; expected one of connect, helo, mail, rcpt, data, \
                 eom, eoh; header handlers see the `eoh` macros",
                "empty macro list: name at least one macro (e.g. \"{i}\"), or leave the stage out \
                 for `mail`",
                "invalid macro name `{rcpt` (write a one-character name like `i` or a name in \
                 braces like `{daemon_name}`, separated by spaces) for `rcpt`",
                "macro `i` listed twice for `data`",
                "expected a string of macro names separated by spaces, e.g. \"{i} {auth_authen}\"",
            ]
        );
        // What was valid is kept.
        assert_eq!(constants(&m.actions), ["ADD_HEADER"]);
        assert_eq!(m.per_message.len(), 1);
    }

    #[test]
    fn refuses_enums_and_takes_generics() {
        let (m, errors) = model(quote! { struct S<T: Send>(T); });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(m.generics.params.len(), 1);
        let (_, errors) = model(quote! { enum E { A } });
        assert!(errors[0].contains("works on structs only"));
    }

    #[test]
    fn takes_the_crate_path_once() {
        let (m, errors) = model(quote! { #[milter(crate = mb)] struct S; });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(quote::ToTokens::to_token_stream(&m.krate).to_string(), "mb");
        let (_, errors) = model(quote! { #[milter(crate = a, crate = b)] struct S; });
        assert_eq!(errors, ["duplicated `crate = …`"]);
    }

    #[test]
    fn checks_macro_names() {
        assert_eq!(
            macro_list(" i\t{j} _ {if_addr} ").unwrap(),
            "i {j} _ {if_addr}"
        );
        assert!(macro_list("{}").is_err());
        assert!(macro_list("ij").is_err());
        assert!(macro_list("{i},{j}").is_err());
        assert!(macro_list("{i} i").is_err());
        assert!(macro_list("   ").is_err());
    }
}
