//! The part of Go's `text/template` language Prometheus rule files use in
//! labels and annotations: `{{ pipeline }}` actions with `|`, variables
//! (`$labels`, `$value`, `$externalLabels`, `$externalURL`, `$` and the
//! dot), field access, string/number literals, parentheses, `if`/`else
//! if`/`else`/`end`, `range`, `with`, and Prometheus' template functions.

use std::collections::BTreeMap;

use crate::gofmt;

/// One sample as template functions see it (`query` results, `first`).
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A template value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Num(f64),
    Str(String),
    Map(BTreeMap<String, String>),
    Sample(QuerySample),
    Samples(Vec<QuerySample>),
    /// The alert's data (the dot): labels, external labels, value.
    Data(Box<AlertData>),
}

/// What `.` holds when an alert's labels and annotations are expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertData {
    pub labels: BTreeMap<String, String>,
    pub external_labels: BTreeMap<String, String>,
    pub external_url: String,
    pub value: f64,
}

/// Runs PromQL for the `query` function.
pub type QueryFn<'a> = &'a dyn Fn(&str) -> Result<Vec<QuerySample>, String>;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("template: {name}: {message}")]
pub struct TemplateError {
    pub name: String,
    pub message: String,
}

/// Expands `text` (named `name` in errors, as Prometheus names it
/// `__alert_<alertname>`) with Prometheus' variables defined.
pub fn expand(name: &str, text: &str, data: &AlertData, query: QueryFn) -> Result<String, TemplateError> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    let err = |message: String| TemplateError { name: name.to_string(), message };
    let nodes = parse(text).map_err(err)?;
    let dot = Value::Data(Box::new(data.clone()));
    let mut vars: Vec<(String, Value)> = vec![
        ("$".into(), dot.clone()),
        ("$labels".into(), Value::Map(data.labels.clone())),
        ("$externalLabels".into(), Value::Map(data.external_labels.clone())),
        ("$externalURL".into(), Value::Str(data.external_url.clone())),
        ("$value".into(), Value::Num(data.value)),
    ];
    let mut out = String::new();
    let mut ex = Exec { query, steps: 0 };
    ex.run(&nodes, &dot, &mut vars, &mut out).map_err(err)?;
    Ok(out)
}

// ---- parsing ----

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Vec<(Pipeline, Vec<Node>)>, Vec<Node>),
    Range(Pipeline, Option<String>, Option<String>, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

#[derive(Debug, Clone)]
struct Pipeline {
    decl: Option<(String, bool)>,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
enum Arg {
    Ident(String),
    Var(String, Vec<String>),
    Dot(Vec<String>),
    Str(String),
    Num(f64),
    Bool(bool),
    Nil,
    Sub(Box<Pipeline>, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Var(String),
    Field(String),
    Dot,
    Str(String),
    Num(f64),
    Pipe,
    LParen,
    RParen,
    Declare,
    Assign,
    Comma,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let name_char = |c: char| c.is_alphanumeric() || c == '_';
    while i < b.len() {
        let c = b[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '|' => {
                out.push(Tok::Pipe);
                i += 1
            }
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            ':' if b.get(i + 1) == Some(&'=') => {
                out.push(Tok::Declare);
                i += 2
            }
            '=' => {
                out.push(Tok::Assign);
                i += 1
            }
            '"' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err("unterminated quoted string".into()),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            let e = b.get(i + 1).ok_or("unterminated quoted string")?;
                            v.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                other => *other,
                            });
                            i += 2;
                        }
                        Some(ch) => {
                            v.push(*ch);
                            i += 1
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            '`' => {
                let start = i + 1;
                let end = (start..b.len()).find(|&j| b[j] == '`').ok_or("unterminated raw quoted string")?;
                out.push(Tok::Str(b[start..end].iter().collect()));
                i = end + 1;
            }
            '$' => {
                let start = i;
                i += 1;
                while i < b.len() && name_char(b[i]) {
                    i += 1;
                }
                out.push(Tok::Var(b[start..i].iter().collect()));
            }
            '.' => {
                if b.get(i + 1).is_some_and(|c| c.is_alphabetic() || *c == '_') {
                    let start = i + 1;
                    i += 1;
                    while i < b.len() && name_char(b[i]) {
                        i += 1;
                    }
                    out.push(Tok::Field(b[start..i].iter().collect()));
                } else if b.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
                    let start = i;
                    i += 1;
                    while i < b.len() && (b[i].is_ascii_digit() || b[i] == 'e') {
                        i += 1;
                    }
                    let t: String = b[start..i].iter().collect();
                    out.push(Tok::Num(t.parse().map_err(|_| format!("bad number syntax: {t:?}"))?));
                } else {
                    out.push(Tok::Dot);
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || ((c == '-' || c == '+') && b.get(i + 1).is_some_and(|d| d.is_ascii_digit())) => {
                let start = i;
                i += 1;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == '.'
                        || ((b[i] == '-' || b[i] == '+') && b[i - 1] == 'e'))
                {
                    i += 1;
                }
                let t: String = b[start..i].iter().collect();
                let v = if let Some(h) = t.strip_prefix("0x") {
                    i64::from_str_radix(h, 16).map(|v| v as f64).map_err(|_| format!("bad number syntax: {t:?}"))?
                } else {
                    t.parse().map_err(|_| format!("bad number syntax: {t:?}"))?
                };
                out.push(Tok::Num(v));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < b.len() && name_char(b[i]) {
                    i += 1;
                }
                out.push(Tok::Ident(b[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected {other:?} in command")),
        }
    }
    // Field chains after variables/dots: `$labels.instance`, `.Labels.job`.
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn pipeline(&mut self) -> Result<Pipeline, String> {
        let mut decl = None;
        if let (Some(Tok::Var(v)), Some(t @ (Tok::Declare | Tok::Assign))) =
            (self.toks.get(self.pos), self.toks.get(self.pos + 1))
        {
            decl = Some((v.clone(), *t == Tok::Declare));
            self.pos += 2;
        }
        let mut cmds = Vec::new();
        loop {
            let mut args = Vec::new();
            while let Some(t) = self.peek() {
                if matches!(t, Tok::Pipe | Tok::RParen | Tok::Comma) {
                    break;
                }
                args.push(self.operand()?);
            }
            if args.is_empty() {
                return Err("missing value for command".into());
            }
            cmds.push(args);
            if self.peek() == Some(&Tok::Pipe) {
                self.pos += 1;
                continue;
            }
            break;
        }
        Ok(Pipeline { decl, cmds })
    }

    fn fields(&mut self) -> Vec<String> {
        let mut f = Vec::new();
        while let Some(Tok::Field(name)) = self.peek() {
            f.push(name.clone());
            self.pos += 1;
        }
        f
    }

    fn operand(&mut self) -> Result<Arg, String> {
        let t = self.peek().cloned().ok_or("unexpected end of command")?;
        self.pos += 1;
        Ok(match t {
            Tok::Ident(name) => match name.as_str() {
                "true" => Arg::Bool(true),
                "false" => Arg::Bool(false),
                "nil" => Arg::Nil,
                _ => Arg::Ident(name),
            },
            Tok::Var(v) => {
                let f = self.fields();
                Arg::Var(v, f)
            }
            Tok::Field(name) => {
                let mut f = vec![name];
                f.extend(self.fields());
                Arg::Dot(f)
            }
            Tok::Dot => Arg::Dot(Vec::new()),
            Tok::Str(s) => Arg::Str(s),
            Tok::Num(n) => Arg::Num(n),
            Tok::LParen => {
                let p = self.pipeline()?;
                if self.peek() != Some(&Tok::RParen) {
                    return Err("unclosed left paren".into());
                }
                self.pos += 1;
                let f = self.fields();
                Arg::Sub(Box::new(p), f)
            }
            other => return Err(format!("unexpected {other:?} in operand")),
        })
    }
}

fn parse_pipeline(src: &str) -> Result<Pipeline, String> {
    let mut p = Parser { toks: lex(src)?, pos: 0 };
    let pl = p.pipeline()?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected {:?} in command", p.toks[p.pos]));
    }
    Ok(pl)
}

enum Piece {
    Text(String),
    Action(String),
}

fn split(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut before = &rest[..start];
        if trim_next {
            before = before.trim_start();
        }
        let after = &rest[start + 2..];
        let trim_left = after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n");
        if trim_left {
            before = before.trim_end();
        }
        pieces.push(Piece::Text(before.to_string()));
        let body_start = if trim_left { 1 } else { 0 };
        let end = after.find("}}").ok_or("unclosed action")?;
        let mut body = &after[body_start..end];
        trim_next = body.ends_with(" -") || body.ends_with("\t-") || body.ends_with("\n-");
        if trim_next {
            body = &body[..body.len() - 1];
        }
        let body = body.trim();
        if !(body.starts_with("/*") && body.ends_with("*/")) {
            pieces.push(Piece::Action(body.to_string()));
        }
        rest = &after[end + 2..];
    }
    pieces.push(Piece::Text(if trim_next { rest.trim_start().to_string() } else { rest.to_string() }));
    Ok(pieces)
}

fn parse(text: &str) -> Result<Vec<Node>, String> {
    let pieces = split(text)?;
    let mut it = pieces.into_iter().peekable();
    let (nodes, end) = parse_list(&mut it)?;
    match end {
        None => Ok(nodes),
        Some(e) => Err(format!("unexpected {{{{{e}}}}}")),
    }
}

type Pieces = std::iter::Peekable<std::vec::IntoIter<Piece>>;

/// Parses nodes until `end`/`else…` (returned) or the end of input.
fn parse_list(it: &mut Pieces) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while let Some(p) = it.next() {
        match p {
            Piece::Text(t) => {
                if !t.is_empty() {
                    nodes.push(Node::Text(t))
                }
            }
            Piece::Action(a) => {
                let (kw, rest) = match a.split_once(char::is_whitespace) {
                    Some((k, r)) => (k, r.trim()),
                    None => (a.as_str(), ""),
                };
                match kw {
                    "end" => return Ok((nodes, Some("end".into()))),
                    "else" => return Ok((nodes, Some(a.clone()))),
                    "if" => {
                        let mut branches = vec![];
                        let mut cond = parse_pipeline(rest)?;
                        let mut otherwise = Vec::new();
                        loop {
                            let (body, end) = parse_list(it)?;
                            branches.push((cond, body));
                            match end.as_deref() {
                                Some("end") => break,
                                Some("else") => {
                                    let (body, end) = parse_list(it)?;
                                    if end.as_deref() != Some("end") {
                                        return Err("expected end after else".into());
                                    }
                                    otherwise = body;
                                    break;
                                }
                                Some(e) if e.starts_with("else if ") => {
                                    cond = parse_pipeline(&e["else if ".len()..])?;
                                }
                                _ => return Err("unexpected EOF in if".into()),
                            }
                        }
                        nodes.push(Node::If(branches, otherwise));
                    }
                    "range" | "with" => {
                        let (mut k, mut v, mut src) = (None, None, rest.to_string());
                        if kw == "range"
                            && let Some((decl, p)) = rest.split_once(":=")
                        {
                            let names: Vec<&str> = decl.split(',').map(str::trim).collect();
                            match names.as_slice() {
                                [one] => v = Some(one.to_string()),
                                [a, b] => {
                                    k = Some(a.to_string());
                                    v = Some(b.to_string())
                                }
                                _ => return Err("too many declarations in range".into()),
                            }
                            src = p.trim().to_string();
                        }
                        let pl = parse_pipeline(&src)?;
                        let (body, end) = parse_list(it)?;
                        let mut otherwise = Vec::new();
                        match end.as_deref() {
                            Some("end") => {}
                            Some("else") => {
                                let (b, e) = parse_list(it)?;
                                if e.as_deref() != Some("end") {
                                    return Err(format!("expected end after else in {kw}"));
                                }
                                otherwise = b;
                            }
                            _ => return Err(format!("unexpected EOF in {kw}")),
                        }
                        nodes.push(if kw == "range" {
                            Node::Range(pl, k, v, body, otherwise)
                        } else {
                            Node::With(pl, body, otherwise)
                        });
                    }
                    "define" | "template" | "block" | "break" | "continue" => {
                        return Err(format!("{{{{{kw}}}}} is not supported in rule templates"));
                    }
                    _ => nodes.push(Node::Action(parse_pipeline(&a)?)),
                }
            }
        }
    }
    Ok((nodes, None))
}

// ---- execution ----

struct Exec<'a> {
    query: QueryFn<'a>,
    steps: usize,
}

fn truth(v: &Value) -> bool {
    match v {
        Value::Nil => false,
        Value::Bool(b) => *b,
        Value::Num(n) => *n != 0.0,
        Value::Str(s) => !s.is_empty(),
        Value::Map(m) => !m.is_empty(),
        Value::Samples(s) => !s.is_empty(),
        Value::Sample(_) | Value::Data(_) => true,
    }
}

/// How `{{ x }}` prints a value (Go's `fmt.Fprint`).
fn print(v: &Value) -> String {
    match v {
        Value::Nil => "<no value>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Num(n) => gofmt::format_g(*n, None),
        Value::Str(s) => s.clone(),
        Value::Map(m) => {
            let inner: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("map[{}]", inner.join(" "))
        }
        Value::Sample(s) => print(&Value::Map(s.labels.clone())) + &format!(" {}", gofmt::format_g(s.value, None)),
        Value::Samples(ss) => {
            let inner: Vec<String> = ss.iter().map(|s| format!("{{{}}}", print(&Value::Sample(s.clone())))).collect();
            format!("[{}]", inner.join(" "))
        }
        Value::Data(d) => format!("{{{} {}}}", print(&Value::Map(d.labels.clone())), gofmt::format_g(d.value, None)),
    }
}

fn field(v: &Value, name: &str) -> Result<Value, String> {
    Ok(match v {
        Value::Map(m) => m.get(name).map(|s| Value::Str(s.clone())).unwrap_or(Value::Nil),
        Value::Sample(s) => match name {
            "Labels" => Value::Map(s.labels.clone()),
            "Value" => Value::Num(s.value),
            _ => return Err(format!("can't evaluate field {name} in type *template.sample")),
        },
        Value::Data(d) => match name {
            "Labels" => Value::Map(d.labels.clone()),
            "ExternalLabels" => Value::Map(d.external_labels.clone()),
            "ExternalURL" => Value::Str(d.external_url.clone()),
            "Value" => Value::Num(d.value),
            _ => return Err(format!("can't evaluate field {name} in type struct")),
        },
        Value::Nil => Value::Nil,
        other => return Err(format!("can't evaluate field {name} in {}", type_name(other))),
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Bool(_) => "bool",
        Value::Num(_) => "float64",
        Value::Str(_) => "string",
        Value::Map(_) => "map[string]string",
        Value::Sample(_) => "*template.sample",
        Value::Samples(_) => "template.queryResult",
        Value::Data(_) => "struct",
    }
}

fn num(v: &Value, func: &str) -> Result<f64, String> {
    match v {
        Value::Num(n) => Ok(*n),
        Value::Str(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("error calling {func}: strconv.ParseFloat: parsing {s:?}: invalid syntax")),
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        other => Err(format!("error calling {func}: can't convert {} to float", type_name(other))),
    }
}

fn string(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        other => print(other),
    }
}

impl Exec<'_> {
    fn run(
        &mut self,
        nodes: &[Node],
        dot: &Value,
        vars: &mut Vec<(String, Value)>,
        out: &mut String,
    ) -> Result<(), String> {
        for n in nodes {
            self.steps += 1;
            if self.steps > 100_000 {
                return Err("template runs too long".into());
            }
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipeline(p, dot, vars)?;
                    if p.decl.is_none() {
                        out.push_str(&print(&v));
                    }
                }
                Node::If(branches, otherwise) => {
                    let depth = vars.len();
                    let mut done = false;
                    for (cond, body) in branches {
                        if truth(&self.pipeline(cond, dot, vars)?) {
                            self.run(body, dot, vars, out)?;
                            done = true;
                            break;
                        }
                    }
                    if !done {
                        self.run(otherwise, dot, vars, out)?;
                    }
                    vars.truncate(depth);
                }
                Node::With(p, body, otherwise) => {
                    let depth = vars.len();
                    let v = self.pipeline(p, dot, vars)?;
                    if truth(&v) {
                        self.run(body, &v, vars, out)?;
                    } else {
                        self.run(otherwise, dot, vars, out)?;
                    }
                    vars.truncate(depth);
                }
                Node::Range(p, k, v, body, otherwise) => {
                    let depth = vars.len();
                    let src = self.pipeline(p, dot, vars)?;
                    let items: Vec<(Value, Value)> = match src {
                        Value::Samples(ss) => {
                            ss.into_iter().enumerate().map(|(i, s)| (Value::Num(i as f64), Value::Sample(s))).collect()
                        }
                        Value::Map(m) => m.into_iter().map(|(k, v)| (Value::Str(k), Value::Str(v))).collect(),
                        Value::Nil => Vec::new(),
                        other => return Err(format!("range can't iterate over {}", print(&other))),
                    };
                    if items.is_empty() {
                        self.run(otherwise, dot, vars, out)?;
                    }
                    for (key, item) in items {
                        if let Some(k) = k {
                            vars.push((k.clone(), key));
                        }
                        if let Some(v) = v {
                            vars.push((v.clone(), item.clone()));
                        }
                        self.run(body, &item, vars, out)?;
                        vars.truncate(depth);
                    }
                }
            }
        }
        Ok(())
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Value, vars: &mut Vec<(String, Value)>) -> Result<Value, String> {
        let mut prev: Option<Value> = None;
        for cmd in &p.cmds {
            prev = Some(self.command(cmd, prev, dot, vars)?);
        }
        let v = prev.unwrap_or(Value::Nil);
        if let Some((name, declare)) = &p.decl {
            if *declare {
                vars.push((name.clone(), v.clone()));
            } else {
                match vars.iter_mut().rev().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = v.clone(),
                    None => return Err(format!("undefined variable: {name}")),
                }
            }
        }
        Ok(v)
    }

    fn arg(&mut self, a: &Arg, dot: &Value, vars: &mut Vec<(String, Value)>) -> Result<Value, String> {
        Ok(match a {
            Arg::Str(s) => Value::Str(s.clone()),
            Arg::Num(n) => Value::Num(*n),
            Arg::Bool(b) => Value::Bool(*b),
            Arg::Nil => Value::Nil,
            Arg::Var(name, fields) => {
                let mut v = vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| format!("undefined variable \"{name}\""))?;
                for f in fields {
                    v = field(&v, f)?;
                }
                v
            }
            Arg::Dot(fields) => {
                let mut v = dot.clone();
                for f in fields {
                    v = field(&v, f)?;
                }
                v
            }
            Arg::Sub(p, fields) => {
                let mut v = self.pipeline(p, dot, vars)?;
                for f in fields {
                    v = field(&v, f)?;
                }
                v
            }
            Arg::Ident(name) => self.call(name, Vec::new())?,
        })
    }

    fn command(
        &mut self,
        cmd: &[Arg],
        prev: Option<Value>,
        dot: &Value,
        vars: &mut Vec<(String, Value)>,
    ) -> Result<Value, String> {
        match &cmd[0] {
            Arg::Ident(name) => {
                let mut args = Vec::new();
                for a in &cmd[1..] {
                    args.push(self.arg(a, dot, vars)?);
                }
                if let Some(p) = prev {
                    args.push(p);
                }
                self.call(name, args)
            }
            first => {
                if cmd.len() > 1 || prev.is_some() {
                    return Err(format!("can't give argument to non-function {first:?}"));
                }
                self.arg(first, dot, vars)
            }
        }
    }

    fn call(&mut self, name: &str, args: Vec<Value>) -> Result<Value, String> {
        let want = |n: usize| -> Result<(), String> {
            if args.len() != n {
                Err(format!("wrong number of args for {name}: want {n} got {}", args.len()))
            } else {
                Ok(())
            }
        };
        Ok(match name {
            "humanize" => {
                want(1)?;
                Value::Str(gofmt::humanize(num(&args[0], name)?))
            }
            "humanize1024" => {
                want(1)?;
                Value::Str(gofmt::humanize1024(num(&args[0], name)?))
            }
            "humanizeDuration" => {
                want(1)?;
                Value::Str(gofmt::humanize_duration(num(&args[0], name)?))
            }
            "humanizePercentage" => {
                want(1)?;
                Value::Str(gofmt::humanize_percentage(num(&args[0], name)?))
            }
            "humanizeTimestamp" => {
                want(1)?;
                Value::Str(gofmt::humanize_timestamp(num(&args[0], name)?))
            }
            "toTime" => {
                want(1)?;
                Value::Str(gofmt::humanize_timestamp(num(&args[0], name)?))
            }
            "printf" => {
                let Some(Value::Str(f)) = args.first() else {
                    return Err("error calling printf: the format must be a string".into());
                };
                Value::Str(printf(f, &args[1..]))
            }
            "print" => Value::Str(args.iter().map(print).collect::<Vec<_>>().join(" ")),
            "title" => {
                want(1)?;
                let s = string(&args[0]);
                let mut out = String::with_capacity(s.len());
                let mut start = true;
                for c in s.chars() {
                    if start && c.is_alphabetic() {
                        out.extend(c.to_uppercase());
                    } else {
                        out.push(c);
                    }
                    start = !(c.is_alphanumeric() || c == '_' || c == '\'');
                }
                Value::Str(out)
            }
            "toUpper" => {
                want(1)?;
                Value::Str(string(&args[0]).to_uppercase())
            }
            "toLower" => {
                want(1)?;
                Value::Str(string(&args[0]).to_lowercase())
            }
            "safeHtml" | "html" | "urlquery" | "js" if name == "safeHtml" => {
                want(1)?;
                Value::Str(string(&args[0]))
            }
            "stripPort" => {
                want(1)?;
                let s = string(&args[0]);
                Value::Str(match s.rsplit_once(':') {
                    Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
                        h.trim_start_matches('[').trim_end_matches(']').to_string()
                    }
                    _ => s,
                })
            }
            "stripDomain" => {
                want(1)?;
                let s = string(&args[0]);
                let (host, port) = match s.rsplit_once(':') {
                    Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h.to_string(), format!(":{p}")),
                    _ => (s.clone(), String::new()),
                };
                if host.parse::<std::net::IpAddr>().is_ok() {
                    Value::Str(s)
                } else {
                    Value::Str(format!("{}{port}", host.split('.').next().unwrap_or_default()))
                }
            }
            "match" => {
                want(2)?;
                let re = regex::Regex::new(&string(&args[0])).map_err(|e| format!("error calling match: {e}"))?;
                Value::Bool(re.is_match(&string(&args[1])))
            }
            "reReplaceAll" => {
                want(3)?;
                let re =
                    regex::Regex::new(&string(&args[0])).map_err(|e| format!("error calling reReplaceAll: {e}"))?;
                Value::Str(re.replace_all(&string(&args[2]), string(&args[1]).as_str()).into_owned())
            }
            "args" => {
                let mut m = BTreeMap::new();
                for (i, a) in args.iter().enumerate() {
                    m.insert(format!("arg{i}"), string(a));
                }
                Value::Map(m)
            }
            "query" => {
                want(1)?;
                let q = string(&args[0]);
                Value::Samples((self.query)(&q).map_err(|e| format!("error calling query: {e}"))?)
            }
            "first" => {
                want(1)?;
                match &args[0] {
                    Value::Samples(s) => match s.first() {
                        Some(s) => Value::Sample(s.clone()),
                        None => return Err("error calling first: first() called on vector with no elements".into()),
                    },
                    other => return Err(format!("error calling first: can't take first of {}", type_name(other))),
                }
            }
            "value" => {
                want(1)?;
                match &args[0] {
                    Value::Sample(s) => Value::Num(s.value),
                    other => return Err(format!("error calling value: not a sample: {}", type_name(other))),
                }
            }
            "label" => {
                want(2)?;
                match &args[1] {
                    Value::Sample(s) => Value::Str(s.labels.get(&string(&args[0])).cloned().unwrap_or_default()),
                    other => return Err(format!("error calling label: not a sample: {}", type_name(other))),
                }
            }
            "strvalue" => {
                want(1)?;
                match &args[0] {
                    Value::Sample(s) => Value::Str(s.labels.get("__value__").cloned().unwrap_or_default()),
                    other => return Err(format!("error calling strvalue: not a sample: {}", type_name(other))),
                }
            }
            "sortByLabel" => {
                want(2)?;
                let l = string(&args[0]);
                match &args[1] {
                    Value::Samples(s) => {
                        let mut s = s.clone();
                        s.sort_by(|a, b| a.labels.get(&l).cmp(&b.labels.get(&l)));
                        Value::Samples(s)
                    }
                    other => return Err(format!("error calling sortByLabel: {}", type_name(other))),
                }
            }
            "len" => {
                want(1)?;
                Value::Num(match &args[0] {
                    Value::Samples(s) => s.len(),
                    Value::Map(m) => m.len(),
                    Value::Str(s) => s.len(),
                    other => return Err(format!("error calling len: len of {}", type_name(other))),
                } as f64)
            }
            "index" => {
                want(2)?;
                match &args[0] {
                    Value::Map(m) => m.get(&string(&args[1])).map(|s| Value::Str(s.clone())).unwrap_or(Value::Nil),
                    other => return Err(format!("error calling index: can't index item of type {}", type_name(other))),
                }
            }
            "not" => {
                want(1)?;
                Value::Bool(!truth(&args[0]))
            }
            "and" => args.iter().find(|a| !truth(a)).or(args.last()).cloned().unwrap_or(Value::Nil),
            "or" => args.iter().find(|a| truth(a)).or(args.last()).cloned().unwrap_or(Value::Nil),
            "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
                want(2)?;
                let ord = match (&args[0], &args[1]) {
                    (Value::Str(a), Value::Str(b)) => a.partial_cmp(b),
                    (a, b) => num(a, name)?.partial_cmp(&num(b, name)?),
                };
                use std::cmp::Ordering::*;
                Value::Bool(match name {
                    "eq" => ord == Some(Equal),
                    "ne" => ord != Some(Equal),
                    "lt" => ord == Some(Less),
                    "le" => matches!(ord, Some(Less | Equal)),
                    "gt" => ord == Some(Greater),
                    _ => matches!(ord, Some(Greater | Equal)),
                })
            }
            other => return Err(format!("function \"{other}\" not defined")),
        })
    }
}

/// Go's `fmt.Sprintf` for the verbs rule templates use: `%s %v %d %f %g
/// %e %q %x %%` with flags, width and precision.
pub fn printf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let chars: Vec<char> = format.chars().collect();
    let mut i = 0;
    let mut next = 0;
    while i < chars.len() {
        if chars[i] != '%' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        i += 1;
        let mut flags = String::new();
        while i < chars.len() && "+-# 0".contains(chars[i]) {
            flags.push(chars[i]);
            i += 1;
        }
        let mut width = String::new();
        while i < chars.len() && chars[i].is_ascii_digit() {
            width.push(chars[i]);
            i += 1;
        }
        let mut prec: Option<usize> = None;
        if i < chars.len() && chars[i] == '.' {
            i += 1;
            let mut p = String::new();
            while i < chars.len() && chars[i].is_ascii_digit() {
                p.push(chars[i]);
                i += 1;
            }
            prec = Some(p.parse().unwrap_or(0));
        }
        let Some(&verb) = chars.get(i) else {
            out.push_str("%!(NOVERB)");
            break;
        };
        i += 1;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next += 1;
        let as_num = |a: &Value| match a {
            Value::Num(n) => Some(*n),
            Value::Bool(_) => None,
            _ => None,
        };
        let s = match verb {
            'v' | 's' => match (verb, arg, prec) {
                ('v', Value::Num(n), _) => gofmt::format_g(*n, None),
                (_, a, Some(p)) => string(a).chars().take(p).collect(),
                (_, a, None) => string(a),
            },
            'q' => format!("{:?}", string(arg)),
            'd' => match as_num(arg) {
                Some(n) if n.fract() == 0.0 => format!("{}", n as i64),
                _ => format!("%!d({}={})", type_name(arg), print(arg)),
            },
            'f' | 'F' => match as_num(arg) {
                Some(n) => gofmt::format_f(n, prec.unwrap_or(6)),
                None => format!("%!f({}={})", type_name(arg), print(arg)),
            },
            'g' => match as_num(arg) {
                Some(n) => gofmt::format_g(n, prec),
                None => format!("%!g({}={})", type_name(arg), print(arg)),
            },
            'e' => match as_num(arg) {
                Some(n) => gofmt::format_e(n, Some(prec.unwrap_or(6))),
                None => format!("%!e({}={})", type_name(arg), print(arg)),
            },
            'x' => match arg {
                Value::Num(n) if n.fract() == 0.0 => format!("{:x}", *n as i64),
                a => string(a).bytes().map(|b| format!("{b:02x}")).collect(),
            },
            other => format!("%!{other}({}={})", type_name(arg), print(arg)),
        };
        let s = if flags.contains('+') && !s.starts_with('-') && matches!(verb, 'd' | 'f' | 'g' | 'e') {
            format!("+{s}")
        } else {
            s
        };
        let w: usize = width.parse().unwrap_or(0);
        let len = s.chars().count();
        if len < w {
            let pad = w - len;
            if flags.contains('-') {
                out.push_str(&s);
                out.extend(std::iter::repeat_n(' ', pad));
            } else if flags.contains('0') && matches!(verb, 'd' | 'f' | 'g' | 'e') {
                let (sign, digits) = if s.starts_with(['-', '+']) { s.split_at(1) } else { ("", s.as_str()) };
                out.push_str(sign);
                out.extend(std::iter::repeat_n('0', pad));
                out.push_str(digits);
            } else {
                out.extend(std::iter::repeat_n(' ', pad));
                out.push_str(&s);
            }
        } else {
            out.push_str(&s);
        }
    }
    if next < args.len() {
        let extra: Vec<String> = args[next..].iter().map(|a| format!("{}={}", type_name(a), print(a))).collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> AlertData {
        AlertData {
            labels: [("instance".to_string(), "host-1:9100".to_string()), ("job".into(), "node".into())]
                .into_iter()
                .collect(),
            external_labels: [("cluster".to_string(), "eu".to_string())].into_iter().collect(),
            external_url: "http://strata:9099".into(),
            value: 0.123456,
        }
    }

    fn no_query(_: &str) -> Result<Vec<QuerySample>, String> {
        Err("no queries here".into())
    }

    fn ex(t: &str) -> String {
        expand("__alert_Test", t, &data(), &no_query).unwrap()
    }

    #[test]
    fn expands_what_rule_files_use() {
        assert_eq!(ex("{{ $labels.instance }} is down"), "host-1:9100 is down");
        assert_eq!(ex("{{ $value }}"), "0.123456");
        assert_eq!(ex("{{ $value | humanizePercentage }}"), "12.35%");
        assert_eq!(ex("{{ humanize $value }}"), "123.5m");
        assert_eq!(ex("{{ printf \"%.2f\" $value }}"), "0.12");
        assert_eq!(ex("{{ .Labels.job }}/{{ $externalLabels.cluster }}"), "node/eu");
        assert_eq!(ex("{{ $labels.instance | stripPort | toUpper }}"), "HOST-1");
        assert_eq!(ex("{{ reReplaceAll \"(.*):.*\" \"$1\" $labels.instance }}"), "host-1");
        assert_eq!(ex("{{ if gt $value 0.1 }}high{{ else }}low{{ end }}"), "high");
        assert_eq!(ex("{{ if match \"^host\" $labels.instance }}yes{{ end }}"), "yes");
        assert_eq!(ex("{{ title \"hello world\" }}"), "Hello World");
        assert_eq!(ex("a {{- \" b \" -}} c"), "a b c");
        assert_eq!(ex("{{ $labels.missing }}"), "<no value>");
        assert_eq!(ex("{{ with $labels.job }}{{ . }}{{ end }}"), "node");
        assert_eq!(ex("{{ $x := 5 }}{{ $x }}"), "5");
        assert_eq!(ex("{{ (args 1 \"b\").arg1 }}"), "b");
        assert_eq!(ex("{{ safeHtml \"<b>\" }}"), "<b>");
    }

    #[test]
    fn query_first_value_label() {
        let q = |e: &str| -> Result<Vec<QuerySample>, String> {
            assert_eq!(e, "up");
            Ok(vec![QuerySample { labels: [("job".to_string(), "a".to_string())].into_iter().collect(), value: 3.0 }])
        };
        let out = expand(
            "t",
            "{{ with query \"up\" }}{{ . | first | value }} {{ . | first | label \"job\" }}{{ end }}",
            &data(),
            &q,
        )
        .unwrap();
        assert_eq!(out, "3 a");
        let out = expand("t", "{{ range query \"up\" }}{{ .Labels.job }}={{ .Value }};{{ end }}", &data(), &q).unwrap();
        assert_eq!(out, "a=3;");
    }

    #[test]
    fn errors_name_the_template() {
        let e = expand("__alert_X", "{{ nosuch 1 }}", &data(), &no_query).unwrap_err();
        assert_eq!(e.to_string(), "template: __alert_X: function \"nosuch\" not defined");
        assert!(expand("t", "{{ if 1 }}", &data(), &no_query).is_err());
        assert!(expand("t", "{{ \"open }}", &data(), &no_query).is_err());
    }

    #[test]
    fn printf_like_go() {
        assert_eq!(printf("%s=%d", &[Value::Str("a".into()), Value::Num(3.0)]), "a=3");
        assert_eq!(printf("%5.1f|%-4s|", &[Value::Num(2.25), Value::Str("x".into())]), "  2.2|x   |");
        assert_eq!(printf("%g %v", &[Value::Num(1e6), Value::Num(0.5)]), "1e+06 0.5");
        assert_eq!(printf("%d%%", &[Value::Num(50.0)]), "50%");
    }
}
