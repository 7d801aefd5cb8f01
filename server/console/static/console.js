// Flywheel console: ask before any action form is sent (the server also insists on the confirmation box).
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.dataset.confirm;
  if (!question) return;
  const reason = form.querySelector("[name=reason]");
  if (!window.confirm(`${question}\nReason: ${reason ? reason.value : ""}`)) event.preventDefault();
});
