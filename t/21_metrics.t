# The metrics: ?metrics (Prometheus text format) and Accept negotiation
# (OpenMetrics), checked by promtool; the alert rules of docs/ checked and
# unit-tested by promtool; a real Prometheus (Debian's package) scraping the
# status Location and a metric read back through its HTTP API. Without
# promtool or prometheus, those parts are skipped and say so.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use Apache::TestRequest qw(GET);
use File::Path ();
use JSON::PP ();
use POSIX ();
use lib 't/lib';
use RSTest;
use Time::HiRes qw(time sleep);

plan tests => 25;

my $t_logs = Apache::Test::vars()->{t_logs};
my $top = Apache::Test::vars()->{top_dir};
my $promtool = -x '/usr/bin/promtool' ? '/usr/bin/promtool' : undef;
my $prometheus = -x '/usr/bin/prometheus' ? '/usr/bin/prometheus' : undef;
my $prom_pid;

END {
    local $?; # waitpid below would make it the exit status of the test
    if ($prom_pid) {
        kill 'TERM', $prom_pid;
        my $end = time + 10;
        sleep 0.1 while kill(0, $prom_pid) && waitpid($prom_pid, POSIX::WNOHANG()) == 0 && time < $end;
        kill 'KILL', $prom_pid if kill 0, $prom_pid;
        waitpid $prom_pid, 0;
    }
}

# the sample's value, or undef: name{...label="value"...}
sub value {
    my ($doc, $name, %want) = @_;
    for my $line (split /\n/, $doc) {
        next unless $line =~ /^\Q$name\E(?:\{(.*)\})? (\S+)$/;
        my ($labels, $v) = ($1 // '', $2);
        my %l = $labels =~ /(\w+)="((?:[^"\\]|\\.)*)"/g;
        next if grep { ($l{$_} // '') ne $want{$_} } keys %want;
        return $v;
    }
    return undef;
}

# --- ?metrics: the text format
# Something fetched by now (the suite's certificates are fetched at start):
# the counters and the histogram have something in them.
# A refresh of "good" makes sure of a fetch in this generation (the
# histogram and the method counters start again with each one).
my $id = RSTest::cert_id('good');
RSTest::refresh($id);
sub good_fetched {
    my $d = shift;
    return (value($d, 'resilient_stapling_fetch_duration_seconds_count') // 0) >= 1
        && (grep { (value($d, 'resilient_stapling_fetch_attempts_total', cn => 'good.rs.test',
                          method => $_->[0], result => $_->[1]) // 0) >= 1 }
            [GET => 'ok'], [GET => 'not-newer'], [POST => 'ok'], [POST => 'not-newer'])
        && (value($d, 'resilient_stapling_fetch_attempts_total', cn => 'status-none.rs.test', method => 'POST',
                  result => 'responder-error') // 0) >= 1;
}
RSTest::wait_for(sub { good_fetched(GET('/rs-status?metrics')->content) }, 20, 0.5);
my $res = GET('/rs-status?metrics');
my $doc = $res->content;
ok($res->code == 200 && $res->header('Content-Type') =~ m{^text/plain; version=0\.0\.4});
ok(($res->header('Vary') // '') =~ /Accept/ && ($res->header('Cache-Control') // '') eq 'no-store');
ok($doc =~ /^# HELP resilient_stapling_fetch_attempts_total /m
   && $doc =~ /^# TYPE resilient_stapling_fetch_attempts_total counter$/m
   && $doc =~ /^# TYPE resilient_stapling_certificate_state gauge$/m
   && $doc =~ /^# TYPE resilient_stapling_fetch_duration_seconds histogram$/m);
ok(value($doc, 'resilient_stapling_certificate_state', cn => 'good.rs.test', state => 'good') eq '1'
   && value($doc, 'resilient_stapling_certificate_state', cn => 'good.rs.test', state => 'expired') eq '0');
ok((value($doc, 'resilient_stapling_certificate_state', cn => 'muststaple.rs.test',
          must_staple => 'true', vhost => 'muststaple.rs.test', state => 'good') // '') eq '1');
ok(value($doc, 'resilient_stapling_certificate_state', id => $id, state => 'good') eq '1');
ok(value($doc, 'resilient_stapling_response_expires_in_seconds', cn => 'good.rs.test') > 3000
   && value($doc, 'resilient_stapling_response_lifetime_seconds', cn => 'good.rs.test') == 3600
   && value($doc, 'resilient_stapling_response_age_seconds', cn => 'good.rs.test') >= 0
   && value($doc, 'resilient_stapling_last_success_timestamp_seconds', cn => 'good.rs.test') > time - 3600
   && value($doc, 'resilient_stapling_consecutive_failures', cn => 'good.rs.test') == 0
   && defined value($doc, 'resilient_stapling_next_attempt_in_seconds', cn => 'good.rs.test'));
# the unauthorized one: counted as responder-error, no response to expire
ok(value($doc, 'resilient_stapling_fetch_attempts_total', cn => 'status-none.rs.test',
         method => 'POST', result => 'responder-error') >= 1
   && value($doc, 'resilient_stapling_consecutive_failures', cn => 'status-none.rs.test') >= 1
   && !defined value($doc, 'resilient_stapling_response_expires_in_seconds', cn => 'status-none.rs.test'));
# fetched by GET first (RFC 5019), POST only when GET fails
ok(good_fetched($doc) && value($doc, 'resilient_stapling_fetch_attempts_total', cn => 'good.rs.test', method => 'GET', result => 'ok') >= 1);
# per server: the states add up to the JSON's, the store, the slots, the histogram
my $j = JSON::PP::decode_json(GET('/rs-status?json')->content);
ok(!grep { (value($doc, 'resilient_stapling_certificates', state => $_) // -1) != $j->{summary}{$_} }
   grep { $_ ne 'stale-but-valid' && $_ ne 'good' } keys %{ $j->{summary} });
ok(value($doc, 'resilient_stapling_store_up') eq '1' && !defined value($doc, 'resilient_stapling_fleet_up')
   && value($doc, 'resilient_stapling_fetch_slots_limit') == 8
   && value($doc, 'resilient_stapling_fetch_slots_in_use') =~ /^\d+$/);
my $count = value($doc, 'resilient_stapling_fetch_duration_seconds_count');
ok($count >= 1 && value($doc, 'resilient_stapling_fetch_duration_seconds_bucket', le => '+Inf') == $count
   && value($doc, 'resilient_stapling_fetch_duration_seconds_sum') > 0);
# no series for the certificate without a responder URL (it has no id)
ok($doc !~ /cn="noaia\.rs\.test"/ && value($doc, 'resilient_stapling_certificates', state => 'no-ocsp-url') == 1);
# the same Require lines
ok(GET('/rs-status-closed?metrics')->code == 403);

# --- OpenMetrics, as Prometheus asks for it
my $om = GET('/rs-status', Accept => 'application/openmetrics-text;version=1.0.0,'
                                    . 'text/plain;version=0.0.4;q=0.5,*/*;q=0.1');
ok($om->header('Content-Type') =~ m{^application/openmetrics-text; version=1\.0\.0}
   && $om->content =~ /\n# EOF\n\z/ && $om->content =~ /^# TYPE resilient_stapling_fetch_attempts counter$/m);
ok(GET('/rs-status?metrics', Accept => 'application/openmetrics-text')->content =~ /# EOF\n\z/);
# an explicit ?json wins; the JSON has the same counters by method and result
my $jg = GET('/rs-status?json', Accept => 'application/openmetrics-text');
my ($jgood) = grep { $_->{subject} =~ /^CN=good\.rs\.test,/ } @{ JSON::PP::decode_json($jg->content)->{certificates} };
ok($jg->header('Content-Type') =~ m{^application/json} && $jgood->{last_method} eq 'GET'
   && $jgood->{attempts}{GET}{ok} + $jgood->{attempts}{GET}{'not-newer'} >= 1
   && join(',', sort keys %{ $jgood->{attempts}{GET} }) eq 'http,invalid,not-newer,ok,responder-error,transport');
# a browser still gets the page
ok(GET('/rs-status', Accept => 'text/html,*/*;q=0.8')->header('Content-Type') =~ m{^text/html});

# --- promtool: the metrics and the rules
my $rules = "$top/docs/prometheus-alerts.yml";
if ($promtool) {
    my $f = "$t_logs/metrics.txt";
    open my $fh, '>', $f or die $!;
    print $fh $doc;
    close $fh;
    my $out = `$promtool check metrics < $f 2>&1`;
    ok($? == 0 && $out eq '') or warn "# promtool check metrics: $out\n";
    $out = `$promtool check rules $rules 2>&1`;
    ok($? == 0 && $out =~ /SUCCESS: 5 rules found/) or warn "# promtool check rules: $out\n";
    $out = `cd $top/docs && $promtool test rules prometheus-alerts.test.yml 2>&1`;
    ok($? == 0 && $out =~ /SUCCESS/) or warn "# promtool test rules: $out\n";
}
else {
    skip('promtool not installed (apt-get install prometheus)') for 1 .. 3;
}

# --- a real Prometheus scrapes the status Location (no ?metrics: it asks
# for OpenMetrics), with the alert rules loaded
if ($prometheus) {
    my $dir = "$t_logs/prometheus";
    File::Path::remove_tree($dir);
    File::Path::make_path("$dir/data");
    my $port = RSTest::port(18700);
    my $hp = Apache::TestRequest::hostport();
    open my $fh, '>', "$dir/prometheus.yml" or die $!;
    print $fh <<"EOC";
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: ['$rules']
scrape_configs:
  - job_name: rs
    metrics_path: /rs-status
    static_configs: [{targets: ['$hp']}]
EOC
    close $fh;
    $prom_pid = fork // die "fork: $!";
    if (!$prom_pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', "$dir/prometheus.log";
        open STDERR, '>&', \*STDOUT;
        { exec $prometheus, "--config.file=$dir/prometheus.yml", "--storage.tsdb.path=$dir/data",
            "--web.listen-address=127.0.0.1:$port", '--storage.tsdb.retention.time=1h',
            '--log.level=warn'; }
        POSIX::_exit(127);
    }
    my $api = sub {
        my $q = shift;
        $q =~ s/([^A-Za-z0-9_.~-])/sprintf '%%%02X', ord $1/ge;
        my $r = eval { JSON::PP::decode_json(RSTest::http_get($port, "/api/v1/query?query=$q")) };
        return $r && $r->{status} eq 'success' ? $r->{data}{result} : undef;
    };
    my $t0 = time;
    my $up = RSTest::wait_for(sub { my $r = $api->('up{job="rs"}'); $r && @$r && $r->[0]{value}[1] eq '1' }, 60, 0.5);
    ok($up) or warn "# prometheus: no successful scrape of http://$hp/rs-status in 60 s; see $dir/prometheus.log\n";
    my $good = RSTest::wait_for(sub {
        my $r = $api->('resilient_stapling_certificate_state{cn="good.rs.test",state="good"}');
        $r && @$r && $r->[0]{value}[1] eq '1' && $r->[0] }, 20, 0.5);
    ok($good && $good->{metric}{id} eq $id && $good->{metric}{must_staple} eq 'false'
       && $good->{metric}{vhost} eq 'good.rs.test')
        or warn "# prometheus query: " . JSON::PP->new->canonical->encode($good || {}) . "\n";
    my $hist = $api->('sum(resilient_stapling_fetch_duration_seconds_count)');
    ok($hist && @$hist && $hist->[0]{value}[1] >= 1);
    my $groups = eval { JSON::PP::decode_json(RSTest::http_get($port, '/api/v1/rules')) };
    my @loaded = map { $_->{name} } map { @{ $_->{rules} } } @{ $groups->{data}{groups} || [] };
    ok(@loaded == 5) or warn "# rules loaded: @loaded\n";
    printf "# prometheus: first scrape %.1f s after start\n", time - $t0;
}
else {
    skip('prometheus not installed (apt-get install prometheus)') for 1 .. 4;
}
