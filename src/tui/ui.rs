//! Drawing: reads the app's state and computes nothing.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Gauge, List, ListItem, ListState, Paragraph, Tabs, Wrap};

use crate::present::ansi;
use crate::tui::app::{App, Panel};
use crate::tui::image::{PictureWidget, color};
use crate::tui::keys;
use crate::tui::picker::ClassPicker;

/// The smallest terminal the explorer draws in.
pub const MIN_SIZE: (u16, u16) = (80, 24);
const SIDE_WIDTH: u16 = 24;

/// The main panel's inner width in a terminal `width` cells wide.
pub fn main_width(width: u16) -> u16 {
    width.saturating_sub(SIDE_WIDTH + 2)
}
const ACCENT: Color = Color::Cyan;

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let text = format!(
            "The terminal is {}×{}; convscope needs at least {}×{}.\nEnlarge it, or press q to quit.",
            area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let [tabs, body, status] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0), Constraint::Length(1)])
            .areas(area);
    draw_tabs(frame, tabs, app);
    let [side, main] =
        Layout::horizontal([Constraint::Length(SIDE_WIDTH), Constraint::Min(0)]).areas(body);
    draw_side(frame, side, app);
    draw_main(frame, main, app);
    if let Some(picker) = &app.picker {
        draw_picker(frame, main, app, picker);
    }
    draw_status(frame, status, app);
    if app.show_help {
        draw_help(frame, area, app);
    }
}

fn draw_tabs(frame: &mut Frame, area: Rect, app: &App) {
    let titles: Vec<String> =
        app.tabs.iter().enumerate().map(|(i, t)| format!("{} {}", i + 1, t.title())).collect();
    let selected = Some(app.tab);
    let tabs = Tabs::new(titles)
        .select(selected)
        .divider("│")
        .padding("", "")
        .highlight_style(Style::new().fg(Color::Black).bg(ACCENT).add_modifier(Modifier::BOLD));
    frame.render_widget(tabs, area);
}

/// The name of class `c` ("?" for a class the model does not have).
fn class_name(app: &App, c: usize) -> &str {
    app.model.classes.get(c).map_or("?", String::as_str)
}

/// Rows of the probability panel in a side panel `height` rows high: every class of a
/// model of up to ten; of more, the most probable ones, as many as the input list leaves
/// room for, and at least ten.
fn probability_rows(app: &App, height: u16) -> usize {
    let k = app.model.num_classes();
    if k <= 10 {
        return k;
    }
    let list_rows = u16::try_from(app.inputs.len()).unwrap_or(u16::MAX).saturating_add(2);
    let room = height.saturating_sub(list_rows).saturating_sub(2).max(10);
    // The input list keeps three rows (a border and one input).
    let most = height.saturating_sub(3 + 2);
    k.min(usize::from(room.min(most)))
}

fn draw_side(frame: &mut Frame, area: Rect, app: &App) {
    let k = app.model.num_classes();
    let shown = probability_rows(app, area.height);
    let [list_area, probs_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(shown as u16 + 2)]).areas(area);
    let items: Vec<ListItem> = app
        .inputs
        .iter()
        .map(|item| {
            let predicted = crate::engine::argmax(&item.probs);
            let mark = match item.label {
                Some(l) if l == predicted => Span::styled(" ✓", Style::new().fg(Color::Green)),
                Some(l) => {
                    let truth: String = class_name(app, l).chars().take(3).collect();
                    Span::styled(format!(" ✗{truth}"), Style::new().fg(Color::Red))
                }
                None => Span::raw(""),
            };
            let width = usize::from(SIDE_WIDTH).saturating_sub(12);
            let name: String = item.name.chars().take(width).collect();
            ListItem::new(Line::from(vec![
                Span::raw(format!("{name:<width$} ")),
                Span::styled(
                    class_name(app, predicted).chars().take(3).collect::<String>(),
                    Style::new().bold(),
                ),
                mark,
            ]))
        })
        .collect();
    let title = format!(" Inputs {}/{} ", app.input + 1, app.inputs.len());
    let list = List::new(items)
        .block(Block::bordered().title(title))
        .highlight_style(Style::new().bg(Color::DarkGray))
        .highlight_symbol("▶");
    let mut state = ListState::default().with_selected(Some(app.input));
    frame.render_stateful_widget(list, list_area, &mut state);

    // Probabilities of the current input: every class of a few; of many the most probable,
    // and the current class in the last row when it is not among them (with its rank).
    let mut lines = Vec::new();
    if let Some(item) = app.current() {
        let mut order: Vec<usize> = (0..k).collect();
        if k > 10 {
            order = item.top_classes(shown);
            if !order.contains(&app.class)
                && let Some(last) = order.last_mut()
            {
                *last = app.class;
            }
        }
        let name_width = if k <= 10 { 3 } else { 9 };
        let bar_width = usize::from(probs_area.width.saturating_sub(9)).saturating_sub(name_width);
        for (row, c) in order.into_iter().enumerate() {
            let p = item.probs[c];
            let filled = (p * bar_width as f32).round() as usize;
            let style = if c == app.class { Style::new().fg(ACCENT).bold() } else { Style::new() };
            // Rows of many classes go by probability: a lower rank is the current class's.
            let rank = 1 + item.probs.iter().filter(|&&q| q > p).count();
            let name = if k > 10 && rank > row + 1 {
                format!("#{rank} {}", class_name(app, c))
            } else {
                class_name(app, c).to_string()
            };
            let name: String = name.chars().take(name_width).collect();
            lines.push(Line::from(vec![
                Span::styled(format!("{name:>name_width$} "), style),
                Span::styled("█".repeat(filled), style),
                Span::raw(" ".repeat(bar_width - filled.min(bar_width))),
                Span::styled(format!(" {p:.2}"), style),
            ]));
        }
    }
    let title = match app.current().and_then(|i| i.label) {
        Some(l) => format!(" p · true {} ", class_name(app, l)),
        None if k > 10 => format!(" Top {shown} of {k} "),
        None => " Probabilities ".into(),
    };
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(title)), probs_area);
}

fn draw_main(frame: &mut Frame, area: Rect, app: &App) {
    let block = Block::bordered()
        .title(app.current_tab().heading(&app.ctx()))
        .border_style(Style::new().fg(ACCENT));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    match &app.panel {
        Panel::Text(lines) => draw_text(frame, inner, app, lines),
        Panel::Busy(text) => draw_busy(frame, inner, app, text),
        Panel::Unavailable(reason) => {
            let text = Paragraph::new(format!("Cannot show this here: {reason}"))
                .style(Style::new().fg(Color::Yellow))
                .wrap(Wrap { trim: true });
            frame.render_widget(text, inner);
        }
        Panel::Picture(picture) => {
            // Word wrapping loses up to a word per row: count rows as if a bit narrower.
            let rows = |text: &str| {
                (text.chars().count() as u16).div_ceil(inner.width.saturating_sub(8).max(1))
            };
            let note = app.input_note().map(|n| format!("input: {n}"));
            let caption_lines = rows(&picture.caption)
                + picture.warnings.iter().map(|w| rows(w)).sum::<u16>()
                + note.as_deref().map_or(0, rows);
            let [image_area, bar_area, text_area] = Layout::vertical([
                Constraint::Min(1),
                Constraint::Length(u16::from(picture.scale.is_some())),
                Constraint::Length(caption_lines),
            ])
            .areas(inner);
            let widget = PictureWidget::new(&picture.image, &app.pixels, app.options.color);
            frame.render_widget(widget, image_area);
            if let Some((cmap, (lo, hi))) = picture.scale {
                let width = usize::from(bar_area.width.saturating_sub(20).min(40));
                let mut spans = vec![Span::raw(format!("{lo:>8.3} "))];
                for i in 0..width {
                    let rgb = cmap.rgb(i as f32 / (width.max(2) - 1) as f32);
                    spans.push(Span::styled("█", Style::new().fg(color(rgb, app.options.color))));
                }
                spans.push(Span::raw(format!(" {hi:.3}  {}", cmap.name())));
                frame.render_widget(Paragraph::new(Line::from(spans)).centered(), bar_area);
            }
            let mut lines: Vec<Line> = picture
                .warnings
                .iter()
                .map(|w| Line::styled(format!("⚠ {w}"), Style::new().fg(Color::Yellow).bold()))
                .collect();
            lines.push(Line::raw(picture.caption.clone()));
            lines.extend(note.map(|n| Line::styled(n, Style::new().fg(Color::Cyan))));
            frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), text_area);
        }
    }
}

fn draw_busy(frame: &mut Frame, area: Rect, app: &App, text: &str) {
    let [_, gauge_area, text_area, _] = Layout::vertical([
        Constraint::Percentage(40),
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Min(0),
    ])
    .areas(area);
    // What this view waits for, and the job under way: its own, or one it waits behind.
    let (ratio, detail) = match app.job_status() {
        Some((title, p)) if title == text => {
            (f64::from(p.fraction.clamp(0.0, 1.0)), format!("computing {title}: {}", p.text))
        }
        Some((title, p)) => (
            f64::from(p.fraction.clamp(0.0, 1.0)),
            format!("computing {text}…\n{title}: {}", p.text),
        ),
        None => (0.0, format!("computing {text}…")),
    };
    let gauge = Gauge::default().ratio(ratio).gauge_style(Style::new().fg(ACCENT));
    frame.render_widget(gauge, gauge_area.inner(ratatui::layout::Margin::new(2, 0)));
    let text = format!("{detail}\nx cancels; keys keep working meanwhile.");
    frame.render_widget(Paragraph::new(text).centered().wrap(Wrap { trim: true }), text_area);
}

/// The class search box over the main panel: the query, then the matches (with the current
/// input's probability), the chosen one highlighted.
fn draw_picker(frame: &mut Frame, area: Rect, app: &App, picker: &ClassPicker) {
    let matches = picker.matches(&app.model.classes);
    let width = area.width.saturating_sub(4).min(60);
    let height = area.height.saturating_sub(2).min(matches.len() as u16 + 4).max(5);
    let popup = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height.saturating_sub(height)) / 2,
        width,
        height.min(area.height),
    );
    frame.render_widget(Clear, popup);
    let title = format!(" Find a class · {} of {} ", matches.len(), app.model.num_classes());
    let block = Block::bordered()
        .title(title)
        .title_bottom(" ↑↓ Enter chooses · Esc cancels ")
        .border_style(Style::new().fg(ACCENT));
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    let [query_area, list_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
    let query = Line::from(vec![
        Span::styled("/ ", Style::new().fg(ACCENT).bold()),
        Span::raw(picker.query.clone()),
        Span::styled("▏", Style::new().fg(ACCENT)),
    ]);
    frame.render_widget(Paragraph::new(query), query_area);
    let probs = app.current().map(|i| i.probs.as_slice()).unwrap_or_default();
    let items: Vec<ListItem> = matches
        .iter()
        .map(|&c| {
            let p = probs.get(c).map_or(String::new(), |p| format!("  p={p:.3}"));
            ListItem::new(Line::from(vec![
                Span::raw(class_name(app, c).to_string()),
                Span::styled(p, Style::new().fg(Color::DarkGray)),
            ]))
        })
        .collect();
    let list = List::new(items)
        .highlight_style(Style::new().fg(Color::Black).bg(ACCENT))
        .highlight_symbol("▶");
    let mut state = ListState::default().with_selected(Some(picker.selected));
    frame.render_stateful_widget(list, list_area, &mut state);
}

/// Lines of text, the first (a table's header) in bold, scrolled.
fn draw_text(frame: &mut Frame, area: Rect, app: &App, lines: &[String]) {
    let lines: Vec<Line> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 { Line::styled(l.clone(), Style::new().bold()) } else { Line::raw(l.clone()) }
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).scroll((app.scroll, 0)), area);
}

fn draw_status(frame: &mut Frame, area: Rect, app: &App) {
    // The right side (job, message, colours) matters most: it goes in first, the key
    // hints fill what is left.
    let mut right = vec![render_mode(app).to_string(), app.colormap.name().to_string()];
    if let Some((title, p)) = app.job_status() {
        right.push(format!("{title} {:.0}%", p.fraction * 100.0));
    }
    if let Some(message) = &app.status {
        right.push(message.clone());
    }
    let right = right.join(" · ");
    let width = usize::from(area.width);
    let right: String = right.chars().take(width).collect();
    let mut room = width.saturating_sub(right.chars().count() + 1);
    let mut spans = Vec::new();
    let digits_are_classes = app.model.num_classes() <= 10;
    for (label, name) in keys::status_hints(app.tab_keys(), digits_are_classes) {
        let hint_width = label.chars().count() + name.chars().count() + 3;
        if hint_width > room {
            break;
        }
        room -= hint_width;
        spans.push(Span::styled(format!(" {label}"), Style::new().fg(Color::Black).bg(ACCENT)));
        spans.push(Span::raw(format!(" {name} ")));
    }
    spans.push(Span::raw(" ".repeat(room + 1)));
    spans.push(Span::styled(right, Style::new().fg(ACCENT)));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn render_mode(app: &App) -> &'static str {
    match app.options.color {
        ansi::ColorMode::TrueColor => "truecolor",
        ansi::ColorMode::Ansi256 => "256 colours",
    }
}

fn draw_help(frame: &mut Frame, area: Rect, app: &App) {
    let own: Vec<_> = app.tabs.iter().map(|t| t.bindings()).collect();
    let entries = keys::help_entries(&own);
    // Two columns, so every key fits at 80×24.
    let half = entries.len().div_ceil(2);
    let width = area.width.saturating_sub(4);
    let height = (half as u16 + 2).min(area.height);
    let popup = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    let column = usize::from(width.saturating_sub(2)) / 2;
    let entry = |i: usize| -> Vec<Span> {
        entries.get(i).map_or_else(Vec::new, |b| {
            let text: String = b.help.chars().take(column.saturating_sub(8)).collect();
            vec![
                Span::styled(format!("{:>6}  ", b.label), Style::new().fg(ACCENT).bold()),
                Span::raw(format!("{text:<width$}", width = column.saturating_sub(8))),
            ]
        })
    };
    let lines: Vec<Line> =
        (0..half).map(|i| Line::from([entry(i), entry(i + half)].concat())).collect();
    frame.render_widget(Clear, popup);
    let block =
        Block::bordered().title(" Keys · any key closes ").border_style(Style::new().fg(ACCENT));
    frame.render_widget(Paragraph::new(lines).block(block), popup);
}
