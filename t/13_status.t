# The status page (HTML and JSON), the refresh POST, server-status, the
# alerts and ResilientStaplingNotifyCmd, through a scripted sequence of
# responder faults on the "status" certificate (8 s responses).
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use Apache::TestRequest qw(GET GET_BODY POST);
use JSON::PP ();
use lib 't/lib';
use RSTest;
use Time::HiRes qw(time sleep);

plan tests => 47;

sub status_json { JSON::PP::decode_json(GET_BODY('/rs-status?json')) }
sub cn { ($_[0]{subject} =~ /CN=([^,]+)/)[0] }
sub by_cn { my $j = shift // status_json(); return { map { cn($_) => $_ } @{ $j->{certificates} } } }
sub notified { my $f = Apache::Test::vars()->{t_logs} . '/notify/notify.log';
               -f $f ? RSTest::slurp($f) : '' }
my %seen_html;
sub html_states {
    my $res = GET('/rs-status');
    $seen_html{$_}++ for $res->content =~ /<tr class="([a-z-]+)">/g;
    return $res;
}

# --- the JSON document and the states at rest
my $j = status_json();
my $c = by_cn($j);
ok($j->{version} == 1 && $j->{generated} =~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/
   && $j->{store_health} eq 'ok' && $j->{fleet_health} eq 'none');
ok($c->{'good.rs.test'}{state} eq 'good');
ok($c->{'revoked.rs.test'}{state} eq 'revoked')
    or warn "# revoked: " . JSON::PP->new->canonical->encode($c->{'revoked.rs.test'}) . "\n";
ok($c->{'noaia.rs.test'}{state} eq 'no-ocsp-url' && !defined $c->{'noaia.rs.test'}{id});
my $none = $c->{'status-none.rs.test'};
ok($none->{state} eq 'none' && $none->{last_ocsp_status} eq 'unauthorized'
   && $none->{consecutive_failures} >= 1 && $none->{last_error} =~ /unauthorized/);
ok($c->{'muststaple.rs.test'}{must_staple} && !$c->{'good.rs.test'}{must_staple});
my @keys = qw(id vhosts subject serial issuer responder must_staple state this_update next_update
              seconds_left next_attempt last_success last_attempt last_error last_ocsp_status
              consecutive_failures fetches failures last_method attempts);
ok(!grep { my $x = $_; grep { !exists $x->{$_} } @keys } @{ $j->{certificates} });
my $sum = 0;
$sum += $_ for values %{ $j->{summary} };
ok($sum == @{ $j->{certificates} });
ok(join(' ', sort @{ $c->{'shared.rs.test'}{vhosts} || [] }) eq 'shared1.rs.test shared2.rs.test');
my $g = $c->{'good.rs.test'};
ok($g->{responder} =~ m{^http://127\.0\.0\.1:\d+/good$} && $g->{fetches} >= 1 && $g->{seconds_left} > 3000
   && $g->{issuer} eq 'CN=RS Test Root CA,O=RS Test' && $g->{id} =~ /^[0-9a-f]{40}$/)
    or warn "# good: " . JSON::PP->new->canonical->encode($g) . "\n";
# worst first
my @order = map { $_->{state} } @{ $j->{certificates} };
my %rank = (expired => 0, none => 1, revoked => 2, 'stale-but-valid' => 3, good => 4, 'no-ocsp-url' => 5);
ok(!grep { $rank{ $order[$_ - 1] } > $rank{ $order[$_] } } 1 .. $#order);
html_states();

# --- the scripted sequence: failing renewal -> stale -> expiring -> expired -> recovered
# Counted from here on only: the notify log is the server's, and a late
# renewal of an earlier test file's certificate writes there too.
my $mark = length notified();
sub notified_here { substr(notified(), $mark) }
RSTest::set_mode('status', 'http500');
my $stale = RSTest::wait_for(sub { my $x = by_cn()->{'status.rs.test'};
                                   $x->{state} eq 'stale-but-valid' && $x->{consecutive_failures} >= 1 && $x }, 8);
ok($stale && $stale->{last_error} =~ /code=500/ && $stale->{fetches} > $stale->{failures});
html_states();
my $expired = RSTest::wait_for(sub { my $x = by_cn()->{'status.rs.test'}; $x->{state} eq 'expired' && $x }, 12);
ok($expired && !defined $expired->{seconds_left});
html_states();
ok(RSTest::wait_for(sub { notified_here() =~ /^expired [0-9a-f]{40} CN=status\.rs\.test,O=RS Test expired/m }, 5));
RSTest::set_mode('status', 'good', 8);
my $back = RSTest::wait_for(sub { my $x = by_cn()->{'status.rs.test'}; $x->{state} eq 'good' && $x }, 8);
ok($back && $back->{consecutive_failures} == 0 && $back->{failures} >= $expired->{failures}
   && $back->{fetches} > $expired->{fetches});
ok(RSTest::wait_for(sub { notified_here() =~ /^recovered [0-9a-f]{40} CN=status\.rs\.test/m }, 5));
my @expiring = notified_here() =~ /^(expiring [0-9a-f]{40} CN=status\.rs\.test.*)$/mg;
ok(@expiring == 1) or warn "# expiring notifications: " . scalar(@expiring) . "\n";  # once, not per child
my @expired_n = notified_here() =~ /^expired [0-9a-f]{40} CN=status\.rs\.test/mg;
ok(@expired_n == 1);
ok(notified() =~ /^revoked [0-9a-f]{40} CN=revoked\.rs\.test,O=RS Test revoked/m);
my $log = RSTest::error_log();
ok($log =~ /\[resilient_stapling:error\].*RS0212: OCSP response for CN=status\.rs\.test,.*last 25 %/);
ok($log =~ /\[resilient_stapling:error\].*RS0210: OCSP response for CN=status\.rs\.test,.*expired/);
ok($log =~ /\[resilient_stapling:notice\].*RS0213: OCSP stapling for CN=status\.rs\.test,.*recovered/);
ok($log =~ /RS0403: ResilientStaplingNotifyCmd .*notify\.sh expiring CN=status\.rs\.test,O=RS Test exited with status 0/);

# --- the HTML page rendered every state at some point
my $res = html_states();
ok($res->code == 200 && $res->header('Content-Type') =~ m{^text/html});
ok(join(' ', sort keys %seen_html) eq 'expired good no-ocsp-url none revoked stale-but-valid')
    or warn "# states rendered: @{[ sort keys %seen_html ]}\n";
# self-contained: no script, nothing loaded from anywhere
ok($res->content =~ /Must-Staple/ && $res->content !~ /<script|\bsrc=|\bhref=|\@import/i);
my $rows = () = $res->content =~ /<tr class=/g;
ok($rows == @{ $j->{certificates} });

# --- refresh: POST schedules a fetch now, GET never changes anything
my $id = $g->{id};
my $before = @{ RSTest::requests('good') };
my $get = GET("/rs-status?refresh=$id");
sleep 2;
ok($get->code == 200 && @{ RSTest::requests('good') } == $before);
my ($code, $body) = RSTest::refresh($id);
ok($code == 200 && $body =~ /"scheduled":1/) or warn "# refresh: $code $body\n";
ok(RSTest::wait_for(sub { @{ RSTest::requests('good') } == $before + 1 }, 4));
sleep 1.5;
ok(@{ RSTest::requests('good') } == $before + 1);   # one fetch, not one per child
ok(RSTest::refresh('0' x 40) == 404);
ok(RSTest::refresh('') == 400);
ok(RSTest::error_log() =~ /RS0501: refresh of $id requested by 127\.0\.0\.1/);

# --- a page on another site cannot press the button: a cross-site form
# (Origin of another site, or none), Sec-Fetch-Site cross-site; a form from
# this site's own page can
my $hp = Apache::TestRequest::hostport();
my $cross = POST('/rs-status', content => "refresh=$id", Origin => 'https://evil.example');
ok($cross->code == 403);
ok(POST('/rs-status', content => "refresh=$id")->code == 403);
ok(POST('/rs-status', content => "refresh=$id", 'Content-Type' => 'text/plain')->code == 403);
ok(POST("/rs-status?refresh=$id", 'Sec-Fetch-Site' => 'cross-site')->code == 403);
my $f0 = by_cn()->{'good.rs.test'}{fetches};
ok(POST('/rs-status', content => "refresh=$id", Origin => "http://$hp")->code == 200);
# the fetch it asked for is done before the counters are compared below
RSTest::wait_for(sub { by_cn()->{'good.rs.test'}{fetches} > $f0 }, 10);
ok(RSTest::error_log() =~ /RS0502: cross-site refresh request refused \(Origin https:\/\/evil\.example/);

# --- Require applies to GET and POST
ok(GET('/rs-status-closed?json')->code == 403);
ok(POST('/rs-status-closed', content => 'refresh=all', Origin => "http://$hp")->code == 403);

# --- server-status
my $auto = GET_BODY('/rs-server-status?auto');
ok($auto =~ /^ResilientStapling-good: \d+$/m && $auto =~ /^ResilientStapling-no-ocsp-url: 1$/m
   && $auto =~ /^ResilientStapling-OldestResponseAge: \d+$/m);
ok(GET_BODY('/rs-server-status') =~ /<h2>Resilient OCSP stapling<\/h2>/);

# --- counters are shared and survive a graceful restart
my $fetches = by_cn()->{'good.rs.test'}{fetches};
RSTest::graceful();
my $after = by_cn()->{'good.rs.test'};
ok($fetches >= 2 && $after->{fetches} == $fetches && $after->{state} eq 'good')
    or warn "# fetches before $fetches, after: " . JSON::PP->new->canonical->encode($after) . "\n";

# --- no log line per handshake: 20 handshakes of "good", nothing about it.
# Children of the new generation may still be starting (slowly under ASan)
# and log their pickup of the stored response (RS0221): not per handshake.
sleep 2;
my $about_good = sub { scalar grep { /good\.rs\.test/ && !/RS0221/ } split /\n/, RSTest::error_log() };
my $lines = $about_good->();
RSTest::handshake('good') for 1 .. 20;
ok($about_good->() == $lines);
ok(RSTest::handshake('good')->{stapled});
