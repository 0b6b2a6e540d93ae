// Applies the saved theme before the app mounts so the first paint has the right colours.
// A separate file (not inline) so a Content-Security-Policy of script-src 'self' allows it.
try {
  var t = localStorage.getItem('workbench.theme')
  if (t === 'dark' || (!t && window.matchMedia('(prefers-color-scheme: dark)').matches)) {
    document.documentElement.classList.add('dark')
  }
} catch (e) {
  /* storage unavailable: light theme */
}
