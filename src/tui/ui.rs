//! Drawing: reads the app's state and computes nothing.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Gauge, List, ListItem, ListState, Paragraph, Tabs, Wrap};

use crate::present::ansi;
use crate::present::colormap::Colormap;
use crate::present::figures::Picture;
use crate::tui::app::{App, Panel};
use crate::tui::grid::{self, TileGrid};
use crate::tui::image::{HalfBlockImage, PictureWidget, color};
use crate::tui::keys;
use crate::tui::picker::ClassPicker;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

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
    let names: Vec<&str> = app.tabs.iter().map(|t| t.title()).collect();
    let titles = tab_titles(&names, app.tab, usize::from(area.width));
    let tabs = Tabs::new(titles)
        .select(Some(app.tab))
        .divider("│")
        .padding("", "")
        .highlight_style(Style::new().fg(Color::Black).bg(ACCENT).add_modifier(Modifier::BOLD));
    frame.render_widget(tabs, area);
}

/// The tab bar's titles, `N name` with a divider between, in `width` cells: where they do
/// not all fit (80 columns), the other tabs' names are cut to the longest length that fits,
/// with an ellipsis, so that every tab's key stays on screen and the current one reads whole.
pub fn tab_titles(names: &[&str], selected: usize, width: usize) -> Vec<String> {
    let title = |i: usize, name: &str, most: usize| {
        let len = name.chars().count();
        match i == selected || len <= most {
            true => format!("{} {name}", i + 1),
            false => {
                let kept: String = name.chars().take(most.saturating_sub(1)).collect();
                format!("{} {kept}…", i + 1)
            }
        }
    };
    let cells = |titles: &[String]| {
        titles.iter().map(|t| t.chars().count()).sum::<usize>() + titles.len().saturating_sub(1)
    };
    let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let titles_at =
        |most: usize| names.iter().enumerate().map(|(i, n)| title(i, n, most)).collect::<Vec<_>>();
    (2..=longest).rev().map(titles_at).find(|t| cells(t) <= width).unwrap_or_else(|| titles_at(1))
}

/// `text` cut to at most `width` terminal cells (a CJK character takes two).
pub(crate) fn cut_to_cells(text: &str, width: usize) -> String {
    let mut used = 0;
    text.chars()
        .take_while(|c| {
            used += c.width().unwrap_or(0);
            used <= width
        })
        .collect()
}

/// `text` cut and padded to exactly `width` terminal cells, on the right (`right`: aligned
/// right) or on the left.
fn pad_to_cells(text: &str, width: usize, right: bool) -> String {
    let text = cut_to_cells(text, width);
    let fill = " ".repeat(width - text.width());
    if right { format!("{fill}{text}") } else { format!("{text}{fill}") }
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
            // The verdict first, the file name in what is left (at least a few letters).
            let room = usize::from(SIDE_WIDTH).saturating_sub(3);
            let most = room.saturating_sub(6);
            let cut = |text: String, width: usize| cut_to_cells(&text, width);
            let pred = format!("pred {}", class_name(app, predicted));
            let (verdict, colour) = match item.label {
                // Not yet classified (the explorer classifies in the background).
                _ if !item.is_classified() => ("pred …".to_string(), Color::DarkGray),
                Some(l) if l == predicted => (format!("{pred} ✓"), Color::Green),
                Some(l) => {
                    // Each name gets half of what the words leave, so "true" stays in view.
                    let half = most.saturating_sub(14) / 2;
                    let truth = cut(class_name(app, l).to_string(), half.max(1));
                    let pred = format!(
                        "pred {}",
                        cut(class_name(app, predicted).to_string(), half.max(1))
                    );
                    (format!("{pred} · true {truth}"), Color::Red)
                }
                None => (pred, Color::Reset),
            };
            let verdict = cut(verdict, most);
            let width = room.saturating_sub(verdict.width() + 1);
            let name = pad_to_cells(&item.name, width, false);
            ListItem::new(Line::from(vec![
                Span::raw(format!("{name} ")),
                Span::styled(verdict, Style::new().fg(colour).bold()),
            ]))
        })
        .collect();
    let title = format!(" Inputs {}/{} ", app.input + 1, app.inputs.len());
    let mut block = Block::bordered().title(title);
    if let Some((done, total)) = app.classifying() {
        block = block.title_bottom(format!(" classifying {done}/{total} "));
    }
    let list = List::new(items)
        .block(block)
        .highlight_style(Style::new().bg(Color::DarkGray))
        .highlight_symbol("▶");
    let mut state = ListState::default().with_selected(Some(app.input));
    frame.render_stateful_widget(list, list_area, &mut state);

    // Probabilities of the current input: every class of a few; of many the most probable,
    // and the current class in the last row when it is not among them (with its rank).
    let mut lines = Vec::new();
    if app.current().is_some_and(|i| !i.is_classified()) {
        lines.push(Line::styled("classifying…", Style::new().fg(Color::DarkGray)));
    }
    if let Some(item) = app.current().filter(|i| i.is_classified()) {
        let mut order: Vec<usize> = (0..k).collect();
        if k > 10 {
            order = item.top_classes(shown);
            if !order.contains(&app.class)
                && let Some(last) = order.last_mut()
            {
                *last = app.class;
            }
        }
        // Names get the width there is, the bar keeps at least a few cells.
        let longest =
            order.iter().map(|&c| class_name(app, c).width() + if k > 10 { 5 } else { 0 }).max();
        let name_width = longest.unwrap_or(1).min(usize::from(probs_area.width).saturating_sub(11));
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
            let name = pad_to_cells(&name, name_width, true);
            lines.push(Line::from(vec![
                Span::styled(format!("{name} "), style),
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
        Panel::Busy { title, previous: None } => draw_busy(frame, inner, app, title),
        Panel::Busy { title, previous: Some(picture) } => {
            draw_picture(frame, inner, app, picture, Footer::Busy(title))
        }
        Panel::Cancelled { previous: Some(picture) } => {
            draw_picture(frame, inner, app, picture, Footer::Cancelled)
        }
        Panel::Cancelled { previous: None } => {
            let text = Paragraph::new(app.cancelled_note())
                .centered()
                .style(Style::new().fg(Color::Yellow).bold())
                .wrap(Wrap { trim: true });
            frame.render_widget(
                text,
                inner.inner(ratatui::layout::Margin::new(0, inner.height / 3)),
            );
        }
        Panel::Unavailable(reason) => {
            let text = Paragraph::new(format!("Cannot show this here: {reason}"))
                .style(Style::new().fg(Color::Yellow))
                .wrap(Wrap { trim: true });
            frame.render_widget(text, inner);
        }
        Panel::Picture(picture) => draw_picture(frame, inner, app, picture, Footer::Caption),
    }
}

/// What a picture has under it.
enum Footer<'a> {
    /// Its caption, warnings and the input's note.
    Caption,
    /// A job making the view's new picture (its title): the gauge and its progress, the
    /// picture being the previous one until the new one arrives.
    Busy(&'a str),
    /// The caption under the note that the view's job was cancelled (the picture is the
    /// previous one).
    Cancelled,
}

/// A picture (one image with its colour bar, or a grid of tiles) and its footer.
fn draw_picture(frame: &mut Frame, inner: Rect, app: &App, picture: &Picture, footer: Footer) {
    // Word wrapping loses up to a word per row: count rows as if a bit narrower.
    let rows =
        |text: &str| (text.chars().count() as u16).div_ceil(inner.width.saturating_sub(8).max(1));
    let note = app.input_note().map(|n| format!("input: {n}"));
    let cancelled = u16::from(matches!(footer, Footer::Cancelled));
    let tiled = !picture.tiles.is_empty();
    let footer_lines = match footer {
        Footer::Busy(_) => 2,
        Footer::Caption | Footer::Cancelled => {
            let lines = cancelled
                + rows(&picture.caption)
                + picture.warnings.iter().map(|w| rows(w)).sum::<u16>()
                + note.as_deref().map_or(0, rows);
            // The tiles need the room more than a long caption does.
            if tiled { lines.min(2 + cancelled + picture.warnings.len() as u16) } else { lines }
        }
    };
    let [image_area, bar_area, text_area] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(u16::from(picture.scale.is_some() || tiled)),
        Constraint::Length(footer_lines),
    ])
    .areas(inner);
    if tiled {
        draw_tiles(frame, image_area, bar_area, app, picture);
    } else {
        let widget = PictureWidget::new(&picture.image, &app.pixels, app.options.color);
        frame.render_widget(widget, image_area);
        if let Some((cmap, range)) = picture.scale {
            draw_colour_bar(frame, bar_area, app, cmap, range, "");
        }
    }
    if let Footer::Busy(title) = footer {
        let (ratio, detail) = busy_progress(app, title);
        let [gauge_area, detail_area] =
            Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(text_area);
        let label = format!("{:.0}% · previous picture meanwhile · x cancels", ratio * 100.0);
        let gauge = Gauge::default().ratio(ratio).label(label).gauge_style(Style::new().fg(ACCENT));
        frame.render_widget(gauge, gauge_area);
        frame.render_widget(Paragraph::new(detail.replace('\n', " · ")), detail_area);
        return;
    }
    let mut lines: Vec<Line> = Vec::new();
    if cancelled > 0 {
        let text = format!("{} · previous picture:", app.cancelled_note());
        lines.push(Line::styled(text, Style::new().fg(Color::Yellow).bold()));
    }
    lines.extend(
        picture
            .warnings
            .iter()
            .map(|w| Line::styled(format!("⚠ {w}"), Style::new().fg(Color::Yellow).bold())),
    );
    lines.push(Line::raw(picture.caption.clone()));
    lines.extend(note.map(|n| Line::styled(n, Style::new().fg(Color::Cyan))));
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), text_area);
}

/// A colour bar for `cmap` over `range`, `note` after its name.
fn draw_colour_bar(
    frame: &mut Frame,
    area: Rect,
    app: &App,
    cmap: Colormap,
    (lo, hi): (f32, f32),
    note: &str,
) {
    let (left, right) = (format!("{lo:>8.3} "), format!(" {hi:.3}  {}{note}", cmap.name()));
    let text = (left.chars().count() + right.chars().count()) as u16;
    let width = usize::from(area.width.saturating_sub(text + 1).min(40));
    let mut spans = vec![Span::raw(left)];
    for i in 0..width {
        let rgb = cmap.rgb(i as f32 / (width.max(2) - 1) as f32);
        spans.push(Span::styled("█", Style::new().fg(color(rgb, app.options.color))));
    }
    spans.push(Span::raw(right));
    frame.render_widget(Paragraph::new(Line::from(spans)).centered(), area);
}

/// A grid picture: one page of labelled tiles with the page and scale under it, or the
/// selected tile zoomed with its own colour bar.
fn draw_tiles(frame: &mut Frame, area: Rect, bar_area: Rect, app: &App, picture: &Picture) {
    let state = app.grid();
    let count = picture.tiles.len();
    let selected = state.selected.min(count - 1);
    let tile = &picture.tiles[selected];
    let own = state.own_scale && tile.own.is_some();
    if state.zoom {
        let [image_area, label_area] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(area);
        frame.render_widget(
            HalfBlockImage::new(grid::tile_image(tile, own), app.options.color),
            image_area,
        );
        let label =
            format!("{} ({} of {count}) · Enter: back to the grid", tile.label, selected + 1);
        frame.render_widget(
            Paragraph::new(label).centered().style(Style::new().fg(ACCENT)),
            label_area,
        );
    } else {
        let widget = TileGrid {
            tiles: &picture.tiles,
            selected,
            own_scale: own,
            mode: app.options.color,
            accent: ACCENT,
        };
        let layout = widget.layout_in(area);
        app.tiles_per_page.set(layout.per_page());
        frame.render_widget(widget, area);
    }
    let layout =
        grid::layout(tile.image.dimensions(), tile.smallest, count, (area.width, area.height));
    let page = format!(" · page {}/{}", selected / layout.per_page() + 1, layout.pages(count));
    let page = if state.zoom { String::new() } else { page };
    let range = match (&tile.own, picture.scale) {
        (Some((_, range)), Some((cmap, _))) if own => Some((cmap, *range, " · own scale each")),
        (_, Some((cmap, range))) => Some((cmap, range, " · one scale")),
        _ => None,
    };
    match range {
        Some((cmap, range, note)) => {
            draw_colour_bar(frame, bar_area, app, cmap, range, &format!("{note}{page}"))
        }
        None => frame
            .render_widget(Paragraph::new(format!("{} tiles{page}", count)).centered(), bar_area),
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
    let (ratio, detail) = busy_progress(app, text);
    let gauge = Gauge::default().ratio(ratio).gauge_style(Style::new().fg(ACCENT));
    frame.render_widget(gauge, gauge_area.inner(ratatui::layout::Margin::new(2, 0)));
    let text = format!("{detail}\nx cancels; keys keep working meanwhile.");
    frame.render_widget(Paragraph::new(text).centered().wrap(Wrap { trim: true }), text_area);
}

/// How far the work a view (computing `text`) waits for is, and what it says: the view's
/// own job, or the one it waits behind.
fn busy_progress(app: &App, text: &str) -> (f64, String) {
    match app.job_status() {
        Some((title, p)) if title == text => {
            (f64::from(p.fraction.clamp(0.0, 1.0)), format!("computing {title}: {}", p.text))
        }
        Some((title, p)) => (
            f64::from(p.fraction.clamp(0.0, 1.0)),
            format!("computing {text}…\n{title}: {}", p.text),
        ),
        None => (0.0, format!("computing {text}…")),
    }
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
    frame.render_widget(Paragraph::new(status_line(app, area.width)), area);
}

/// The status line `width` cells wide: key hints on the left; colour mode, colour scale,
/// the job under way and the last message on the right. What does not fit drops by
/// priority: `? help` always shows, then the job and the message (cut to the room left),
/// then the hints in their order, then the colour scale and the colour mode.
pub fn status_line(app: &App, width: u16) -> Line<'static> {
    let width = usize::from(width);
    let digits_are_classes = app.model.num_classes() <= 10;
    let hints = keys::status_hints(app.tab_keys(), digits_are_classes);
    let hint_width =
        |(label, name): &(&str, &str)| label.chars().count() + name.chars().count() + 3;
    let (help, others): (Vec<_>, Vec<_>) = hints.into_iter().partition(|h| h.0 == "?");
    // One cell between the hints and the right side.
    let mut room = width.saturating_sub(help.iter().map(hint_width).sum::<usize>() + 1);
    // Each part of the right side costs its text and a " · " before it; the job and the
    // message are cut to the room there is rather than left out.
    fn take(room: &mut usize, text: String, cut: bool) -> Option<String> {
        let need = text.chars().count() + 3;
        if need <= *room {
            *room -= need;
            Some(text)
        } else if cut && *room > 4 {
            let kept: String = text.chars().take(*room - 4).collect();
            *room = 0;
            Some(format!("{kept}…"))
        } else {
            None
        }
    }
    let job = app.job_status().map(|(title, p)| format!("{title} {:.0}%", p.fraction * 100.0));
    let job = job.and_then(|j| take(&mut room, j, true));
    let message = app.status.clone().and_then(|m| take(&mut room, m, true));
    let mut shown = Vec::new();
    for hint in others {
        if hint_width(&hint) > room {
            break;
        }
        room -= hint_width(&hint);
        shown.push(hint);
    }
    let colormap = take(&mut room, app.colormap.name().to_string(), false);
    let mode = take(&mut room, render_mode(app).to_string(), false);
    let right = [mode, colormap, job, message].into_iter().flatten().collect::<Vec<_>>();
    let right = right.join(" · ");
    let mut spans = Vec::new();
    let mut used = 0;
    for (label, name) in shown.into_iter().chain(help) {
        used += hint_width(&(label, name));
        spans.push(Span::styled(format!(" {label}"), Style::new().fg(Color::Black).bg(ACCENT)));
        spans.push(Span::raw(format!(" {name} ")));
    }
    let gap = width.saturating_sub(used + right.chars().count()).max(1);
    spans.push(Span::raw(" ".repeat(gap)));
    spans.push(Span::styled(right, Style::new().fg(ACCENT)));
    Line::from(spans)
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
    let popup = area.inner(ratatui::layout::Margin::new(2, 1));
    let inner_width = usize::from(popup.width.saturating_sub(2));
    // Wide enough: two columns; else one. A description wraps under itself.
    let columns = if inner_width >= 100 { 2 } else { 1 };
    let column = inner_width / columns;
    let text_width = column.saturating_sub(9).max(10);
    let wrap = |text: &str| -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        for word in text.split(' ') {
            match lines.last_mut() {
                Some(last) if last.chars().count() + 1 + word.chars().count() <= text_width => {
                    last.push(' ');
                    last.push_str(word);
                }
                _ => lines.push(word.to_string()),
            }
        }
        lines
    };
    // Each entry as rows of (key, text), the key on its first row only.
    let rows: Vec<Vec<(String, String)>> = entries
        .iter()
        .map(|b| {
            wrap(b.help)
                .into_iter()
                .enumerate()
                .map(|(i, text)| (if i == 0 { b.label.to_string() } else { String::new() }, text))
                .collect()
        })
        .collect();
    let half = rows.len().div_ceil(columns);
    let column_rows = |from: usize, to: usize| -> Vec<(String, String)> {
        rows[from.min(rows.len())..to.min(rows.len())].concat()
    };
    let left = column_rows(0, half);
    let right = if columns == 2 { column_rows(half, rows.len()) } else { Vec::new() };
    let cell = |row: Option<&(String, String)>| -> Vec<Span> {
        row.map_or_else(
            || vec![Span::raw(" ".repeat(column))],
            |(key, text)| {
                vec![
                    Span::styled(format!("{key:>7}  "), Style::new().fg(ACCENT).bold()),
                    Span::raw(format!("{text:<text_width$}")),
                ]
            },
        )
    };
    let lines: Vec<Line> = (0..left.len().max(right.len()))
        .map(|i| {
            let mut spans = cell(left.get(i));
            if columns == 2 {
                spans.extend(cell(right.get(i)));
            }
            Line::from(spans)
        })
        .collect();
    let visible = usize::from(popup.height.saturating_sub(2));
    let last_start = lines.len().saturating_sub(visible);
    let scroll = usize::from(app.help_scroll).min(last_start);
    let title = if last_start > 0 {
        format!(
            " Keys {}–{} of {} · ↑↓ PgUp PgDn scroll · any other key closes ",
            scroll + 1,
            (scroll + visible).min(lines.len()),
            lines.len()
        )
    } else {
        " Keys · any key closes ".to_string()
    };
    frame.render_widget(Clear, popup);
    let block = Block::bordered().title(title).border_style(Style::new().fg(ACCENT));
    frame.render_widget(
        Paragraph::new(lines).block(block).scroll((u16::try_from(scroll).unwrap_or(0), 0)),
        popup,
    );
}
