// The page of python -m genre_jax.serve: POST /v1/predict, then /v1/explain when the server has it.
'use strict';

const $ = (id) => document.getElementById(id);
let health = null;

async function api(path, body) {
  const response = await fetch(path, {
    method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  const data = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function showError(message) {
  $('error').textContent = message || '';
  $('error').hidden = !message;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderBars(labels, record) {
  const bars = $('bars');
  bars.replaceChildren();
  const order = [...labels].sort((a, b) => record.probabilities[b] - record.probabilities[a]);
  for (const genre of order) {
    const p = record.probabilities[genre];
    const threshold = typeof record.threshold === 'number' ? record.threshold
                                                           : record.threshold[genre];
    const row = element('div', genre in record.genres ? 'row predicted' : 'row');
    row.dataset.genre = genre;
    const track = element('div', 'track');
    const bar = element('div', 'bar');
    bar.style.width = `${(100 * p).toFixed(1)}%`;
    const mark = element('div', 'threshold');
    mark.style.left = `${(100 * threshold).toFixed(1)}%`;
    mark.title = `threshold ${threshold}`;
    track.append(bar, mark);
    row.append(element('span', 'name', genre), track, element('span', 'value', p.toFixed(3)));
    bars.append(row);
  }
  $('results').hidden = false;
}

function renderWords(explanation, genre) {
  const attributions = explanation.genres[genre].attributions;
  const scale = Math.max(1e-9, ...attributions.map(Math.abs));
  const words = $('words');
  words.replaceChildren();
  explanation.words.forEach((word, i) => {
    const a = attributions[i] || 0;
    const span = element('span', 'word', word);
    const color = a >= 0 ? 'var(--positive)' : 'var(--negative)';
    span.style.background = `rgba(${color}, ${(0.6 * Math.abs(a) / scale).toFixed(3)})`;
    span.title = `${genre}: ${a.toFixed(4)}`;
    words.append(span, ' ');
  });
  for (const tab of $('genre-tabs').children) {
    tab.setAttribute('aria-selected', String(tab.dataset.genre === genre));
  }
}

function renderExplanation(explanation) {
  const genres = Object.keys(explanation.genres);
  const tabs = $('genre-tabs');
  tabs.replaceChildren();
  for (const genre of genres) {
    const tab = element('button', '', genre);
    tab.type = 'button';
    tab.dataset.genre = genre;
    tab.setAttribute('role', 'tab');
    tab.addEventListener('click', () => renderWords(explanation, genre));
    tabs.append(tab);
  }
  if (genres.length) renderWords(explanation, genres[0]);
  $('explanation').hidden = genres.length === 0;
}

async function submit(event) {
  event.preventDefault();
  const text = $('synopsis').value;
  showError('');
  if (!text.trim()) { showError('Paste a synopsis first.'); return; }
  $('predict').disabled = true;
  $('status').textContent = 'Scoring…';
  $('explanation').hidden = true;
  try {
    const result = await api('/v1/predict', {texts: [text]});
    const record = result.predictions[0];
    renderBars(result.labels, record);
    if (health && health.explain) {
      $('status').textContent = 'Explaining…';
      const top = Object.keys(record.genres).length ? Object.keys(record.genres)
                                                    : Object.keys(record.top).slice(0, 1);
      const explained = await api('/v1/explain', {texts: [text], genres: top});
      renderExplanation(explained.explanations[0]);
    }
    $('status').textContent = '';
  } catch (error) {
    $('status').textContent = '';
    showError(error.message);
  } finally {
    $('predict').disabled = false;
  }
}

async function start() {
  $('form').addEventListener('submit', submit);
  try {
    health = await (await fetch('/healthz')).json();
    $('model').textContent = `${health.kind} (${health.models.join(', ')}), ` +
        `${health.labels.length} genres, calibration ${health.calibration}` +
        (health.explain ? ', with explanations' : '');
  } catch (error) {
    showError(`The server does not answer: ${error.message}`);
  }
}

start();
